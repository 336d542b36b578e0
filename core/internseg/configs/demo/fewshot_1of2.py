# The paper's fewshot_1of2 on the CPU demo: the tiny trunk (96 wide, 4 blocks), 84 px
# crops, batch 2, lr 2e-3 (a random 96-wide trunk learns nothing in a few hundred steps at
# 4e-5), 160 iterations.
_base_ = ["../paper/fewshot_1of2.py", "../_base_/demo.py"]
model = dict(
    data_preprocessor=dict(size=(84, 84)),
    backbone=dict(trunk="intern_vit_tiny_demo", img_size=84, out_indices=[3]),
    decode_head=dict(in_channels=96),
    test_cfg=dict(crop_size=(84, 84), stride=(54, 54)),
)
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline={{_base_.demo_train_pipeline}}),
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(pipeline={{_base_.demo_capped_test_pipeline}}),
)
test_dataloader = val_dataloader
total_batch_size = 2
optim_wrapper = dict(optimizer=dict(lr=2e-3))
train_cfg = dict(max_iters=160, val_interval=80)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=4),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=161),
]
default_hooks = dict(checkpoint=dict(interval=80), logger=dict(interval=16))
