"""`internseg inspect`: parameter counts and optimizer groups of a config, without memory.

The model is built on PyTorch's meta device, so the 6B configs inspect in seconds on a laptop.
"""

from __future__ import annotations

from .layer_decay import groups_from_paramwise
from .segmentor import build_segmentor


def human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def resolved_settings(cfg) -> dict:
    """What a run's config resolved to, for checking a cell before submitting it: the trunk
    and the blocks its heads read, the dataset and its classes, the schedule and optimizer,
    and the test geometry."""
    from ..config import backbone_architecture, dataset_of, trunk_of

    backbone, optim = cfg.model.backbone, cfg.optim_wrapper
    arch = backbone_architecture(backbone)
    warmup = [s for s in cfg.param_scheduler if s.type == "LinearLR"]
    return dict(
        trunk=trunk_of(cfg).name, depth=arch["depth"], pretrain_size=arch["pretrain_size"],
        patch_size=arch["patch_size"], img_size=backbone.img_size,
        out_indices=list(backbone.out_indices),
        interaction_indexes=backbone.get("interaction_indexes"),
        dataset=dataset_of(cfg).name, dataset_class=cfg.train_dataloader.dataset.type,
        data_root=cfg.train_dataloader.dataset.data_root,
        num_classes=cfg.model.decode_head.num_classes,
        iterations=cfg.train_cfg.max_iters,
        warmup_iterations=warmup[0].end - 1 if warmup else 0,
        lr=optim.optimizer.lr, weight_decay=optim.optimizer.get("weight_decay", 0.0),
        layer_decay_rate=optim.get("paramwise_cfg", {}).get("layer_decay_rate", 1.0),
        layer_decay_layers=arch["depth"], drop_path_rate=backbone.get("drop_path_rate", 0.0),
        freeze_trunk=bool(backbone.get("freeze_trunk")),
        crop=list(cfg.model.data_preprocessor.size),
        slide=dict(crop=list(cfg.model.test_cfg.crop_size),
                   stride=list(cfg.model.test_cfg.stride)),
        test_resize=[s.type for s in cfg.test_dataloader.dataset.pipeline
                     if "Resize" in s.type],
        batch_size=cfg.total_batch_size)


def describe(cfg) -> dict:
    """Counts and optimizer groups of the segmentor a config builds (not
    ``mmengine.analysis.parameter_count``: the table needs the trainable share and the
    adapter's, by key)."""
    model = build_segmentor(cfg, device="meta")
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    backbone = sum(p.numel() for n, p in params.items() if n.startswith("backbone."))
    # The auxiliary head only exists in training; the original README counts without it.
    aux = sum(p.numel() for n, p in params.items() if n.startswith("auxiliary_head."))
    aux_trainable = sum(p.numel() for n, p in params.items()
                        if n.startswith("auxiliary_head.") and p.requires_grad)
    # a backbone with parts of its own around the trunk (the adapter) counts them apart
    is_trunk = getattr(model.backbone, "is_trunk", None)
    adapter = sum(p.numel() for n, p in params.items() if is_trunk and n.startswith("backbone.")
                  and not is_trunk(n.removeprefix("backbone.")))
    optim = cfg.optim_wrapper
    groups = groups_from_paramwise(model, base_lr=optim.optimizer.lr,
                                   weight_decay=optim.optimizer.get("weight_decay", 0.0),
                                   paramwise=optim.get("paramwise_cfg", {}))
    scales = [g["lr_scale"] for g in groups]
    return dict(
        total_params=total,
        trainable_params=trainable,
        backbone_params=backbone,
        auxiliary_head_params=aux,
        adapter_params=adapter,
        summary=f"{human(trainable)} / {human(total)}",
        summary_without_auxiliary_head=f"{human(trainable - aux_trainable)} / {human(total - aux)}",
        param_groups=dict(
            count=len(groups),
            base_lr=optim.optimizer.lr,
            lr_scale_min=min(scales) if scales else None,
            lr_scale_max=max(scales) if scales else None,
            with_weight_decay=sum(1 for g in groups if g["weight_decay"] > 0),
        ),
    )
