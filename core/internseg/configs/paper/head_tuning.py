# Head tuning: frozen trunk, resamplers + UperNet trained; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
model = dict(
    backbone=dict(drop_path_rate=0.0, freeze_trunk=True),
    auxiliary_head=dict(in_index=1),
)
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
