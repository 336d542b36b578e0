# Linear probing: frozen trunk, linear head on block 44; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/linear.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(out_indices=[44], drop_path_rate=0.0, freeze_trunk=True))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0), paramwise_cfg=dict(layer_decay_rate=1.0))
