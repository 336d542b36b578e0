"""Pricing a validation pass: the slide windows of the assumed validation image through
the run's test pipeline, at the GPU check's measured speed, the rehearsal's traced FLOPs or
the trunk's FLOPs."""

from __future__ import annotations


from ..sizing import resized_for_test, slide_windows
from .step import A100_BF16_PEAK, ASSUMED_UTILISATION, SlideSpeed, trunk_flops_per_image


def validation_pass(cfg, dataset: str, gpus: int, slide: SlideSpeed | None,
                    measured_flops: float | None, where: str,
                    trace=None) -> tuple[float, str]:
    """Seconds of one validation (every image of the run's dataset, shared by its GPUs) and
    where the figure comes from. ``measured_flops``: the trunk FLOPs of one window of the
    segmentor the GPU check timed; ``where``: the run, for errors; ``trace``: its rehearsal,
    which ran the same assumed image through the whole segmentor."""
    from ..datasets import get_dataset

    images = get_dataset(dataset).val_count
    test = cfg.model.test_cfg
    size = get_dataset(dataset).val_image
    resized = resized_for_test(cfg.val_dataloader.dataset.pipeline, *size, where)
    windows = slide_windows(*resized, test.crop_size, test.stride)
    window_flops = trunk_flops_per_image(cfg.model.backbone)
    if slide is not None:
        scale = (windows / slide_windows(*slide.image, slide.crop, slide.stride)
                 * window_flops / measured_flops)
        per_image = scale / slide.images_per_s
        source = (f"measured slide inference (linear head), x{scale:.3f} windows and trunk "
                  f"FLOPs ({windows} per assumed {size[0]}x{size[1]} image)")
    elif trace is not None:
        per_image = trace.flops_per_val_image / (A100_BF16_PEAK * ASSUMED_UTILISATION)
        source = (f"traced FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak, {windows} "
                  f"windows per assumed {size[0]}x{size[1]} image")
    else:
        per_image = windows * window_flops / (A100_BF16_PEAK * ASSUMED_UTILISATION)
        source = (f"trunk FLOPs at {ASSUMED_UTILISATION:.0%} of A100 bf16 peak, {windows} "
                  f"windows per assumed {size[0]}x{size[1]} image")
    return images * per_image / gpus, source
