"""`internseg test`: slide inference over the validation set, metrics.json out."""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import apply_run_options, building_model, dataset_of, load_config
from ..datasets import MANIFEST_NAMES, check_data_root, manifest_beside
from ..env import versions
from ..errors import InputError
from ..io import naming_full_disk, write_json
from ..models.pretrained import (CheckpointError, check_fits, checkpoint_filter,
                                load_checkpoint_file, released_name)
from ..safe_load import check_local
from .result import is_trunk_key

log = logging.getLogger("internseg")

def load_segmentor_weights(model, path: str | Path) -> None:
    """Load our final checkpoints and the released ones, full or head-only.

    A checkpoint without trunk weights (frozen-trunk runs) relies on the trunk's pretrained
    file, loaded by ``init_weights``; anything else missing is an error.
    """
    state = checkpoint_filter(load_checkpoint_file(path), model, source=str(path))
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        # its predictions would be one class everywhere: an mIoU near 0 that looks measured
        raise CheckpointError(f"{path}: {len(broken)} tensors hold NaN or inf, e.g. "
                              f"{', '.join(broken[:3])}")
    check_fits(state, model.state_dict(), path, released_name)
    has_trunk = any(is_trunk_key(model, k) for k in state)
    if not has_trunk:
        if not getattr(model.backbone, "pretrained", None):
            raise CheckpointError(f"{path} holds no trunk weights and the config names no "
                                  "pretrained trunk (model.backbone.pretrained)")
        model.backbone.init_weights()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if has_trunk or not is_trunk_key(model, k)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{path} does not fit the config: missing {missing[:5]} "
                              f"({len(missing)}), unexpected {result.unexpected_keys[:5]} "
                              f"({len(result.unexpected_keys)})")
    log.info("loaded %s (%d tensors%s)", path, len(state),
             "" if has_trunk else "; trunk from its pretrained file")


def check_image_count(dataset) -> None:
    """An evaluation covers the whole validation split its tree's manifest lists: one on
    fewer images (a folder emptied by hand, a tree being replaced) is a number of another
    test set. A tree without its manifest (a copy of the data root) is held to its own
    label maps: an image lost on the way leaves its map behind."""
    found = len(dataset)
    manifest = manifest_beside(dataset.data_root)
    if manifest is None:
        folder = Path(dataset.data_prefix["seg_map_path"])
        maps = sum(1 for p in folder.iterdir() if p.name.endswith(dataset.seg_map_suffix))
        if maps != found:
            raise InputError(f"{dataset.data_root}: {found} validation images to evaluate, but "
                             f"{maps} label maps in {folder}: images are missing from the tree "
                             "(a copy of it?); prepare it again, or copy it whole")
        log.warning("%s: no manifest beside the tree (%s): its %d validation images are not "
                    "checked against the count it was prepared with", dataset.data_root,
                    " or ".join(name.format(tree=Path(dataset.data_root).name)
                                for name in MANIFEST_NAMES), found)
        return
    expected = manifest.get("val_count")
    if found != expected:
        raise InputError(f"{dataset.data_root}: {found} validation images to evaluate, but "
                         f"its manifest {manifest['path']} lists {expected}: the tree changed "
                         "since it was prepared; prepare it again")


def holds_trunk(cfg, path: str | Path) -> bool:
    """Whether a checkpoint holds the trunk of the segmentor ``cfg`` builds (its keys only:
    the segmentor is built on the meta device, the file's tensors are memory-mapped)."""
    from .segmentor import build_segmentor

    model = build_segmentor(cfg, device="meta")
    state = checkpoint_filter(load_checkpoint_file(path), model, source=str(path))
    return any(is_trunk_key(model, k) for k in state)


def run_test(config: str, checkpoint: str, out: str, *, data_root: str | None = None,
             pretrained: str | None = None, work_dir: str | None = None,
             launcher: str = "none", cfg_options: dict | None = None,
             trunk: str | None = None, dataset: str | None = None) -> dict:
    from mmengine.runner import Runner

    from ..results.table import check_metrics
    from .metrics import PerClassIoUMetric

    check_local(checkpoint)
    if pretrained:
        check_local(pretrained, "--pretrained")
    cfg = load_config(config, cfg_options, trunk=trunk, dataset=dataset)
    apply_run_options(cfg, data_root=data_root, pretrained=pretrained, launcher=launcher)
    has_trunk = holds_trunk(cfg, checkpoint)
    if has_trunk:
        # the trunk is built to be filled from the file it names: this one is not needed
        cfg.model.backbone.pretrained = None
    check_data_root(cfg, ("test_dataloader",), given=bool(data_root))
    cfg.work_dir = work_dir or str(Path(out).parent / "test_work")
    cfg.load_from = None
    # mmengine's own writes there (its config dump, scalars) name no file on a full disk
    with naming_full_disk(cfg.work_dir), building_model(cfg, config):
        runner = Runner.from_cfg(cfg)
    check_image_count(runner.test_loop.dataloader.dataset)
    load_segmentor_weights(runner.model, checkpoint)
    if has_trunk and pretrained:
        log.warning("--pretrained %s: not used: %s holds the trunk's weights too (the trunk "
                    "of a trained-trunk run is its own, not the pretrained file's)",
                    pretrained, checkpoint)
    with naming_full_disk(cfg.work_dir):
        summary_metrics = runner.test()

    metric = next(m for m in runner.test_evaluator.metrics
                  if isinstance(m, PerClassIoUMetric))
    check_metrics(metric.last_summary, f"evaluation of {checkpoint}")
    result = dict(
        config=str(config),
        checkpoint=str(checkpoint),
        dataset=dataset_of(cfg, config).name,  # what the table checks against the run's
        num_images=len(runner.test_dataloader.dataset),
        inference=dict(cfg.model.test_cfg),
        **metric.last_summary,
        versions=versions(),
    )
    log.info("mIoU %.2f mAcc %.2f aAcc %.2f", summary_metrics.get("mIoU", float("nan")),
             summary_metrics.get("mAcc", float("nan")), summary_metrics.get("aAcc", float("nan")))
    write_json(out, result)
    return result
