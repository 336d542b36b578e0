# Few-shot 1/16: linear head on block 47, whole trunk trained; 5000 iterations on 1263 images.
_base_ = ["../_base_/fewshot.py"]
train_fraction = 16
train_cfg = dict(max_iters=5000)
# warmup 100, then poly to 0 (ends are counts + 1: configs/_base_/default_runtime.py)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=101),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=5001),
]
