# Few-shot 1/2: linear head on block 47, whole trunk trained; 40000 iterations on 10105 images.
_base_ = ["../_base_/fewshot.py"]
train_fraction = 2
train_cfg = dict(max_iters=40000)
# warmup 800, then poly to 0 (ends are counts + 1: configs/_base_/default_runtime.py)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=801),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=40001),
]
