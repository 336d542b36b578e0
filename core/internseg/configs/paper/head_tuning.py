# Head tuning: frozen trunk, resamplers + UperNet trained; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
experiment = dict(name="head_tuning", head="upernet", trunk="frozen", fraction=1)
max_iters = 80000
warmup_iters = 1500
model = dict(
    backbone=dict(
        out_indices=[11, 23, 35, 47],
        drop_path_rate=0.0,
        freeze_trunk=True,
    ),
    auxiliary_head=dict(in_index=1),
)
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=1.0),
)
# lr(i) = poly(i) * warmup(i), per iteration. mmengine reaches a scheduler's final value at
# step end - 1, hence the + 1: warmup is complete at warmup_iters, poly is 0 at max_iters.
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=1000)
