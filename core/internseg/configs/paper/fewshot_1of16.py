# Few-shot 1/16: linear head on block 47, whole trunk trained; 5000 iterations on 1263 images.
_base_ = [
    "../_base_/models/linear.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
experiment = dict(name="fewshot_1of16", head="linear", trunk="trained", fraction=16)
max_iters = 5000
warmup_iters = 100
model = dict(
    backbone=dict(
        out_indices=[47],
        drop_path_rate=0.4,
        freeze_trunk=False,
    ),
)
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.95),
)
# lr(i) = poly(i) * warmup(i), per iteration. mmengine reaches a scheduler's final value at
# step end - 1, hence the + 1: warmup is complete at warmup_iters, poly is 0 at max_iters.
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters + 1),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters + 1),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=1000)
