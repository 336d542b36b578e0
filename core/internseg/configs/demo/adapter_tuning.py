# The paper's adapter_tuning on the CPU demo: the tiny trunk, 96 px crops (the adapter needs
# multiples of 32), one interaction range per block, 4 deformable heads, a 16-channel stem,
# heads 32 wide, batch 2, lr 2e-3, 40 iterations. CPU: no AMP (mmengine's needs a GPU): fp32
# adapter and heads, bf16 trunk as the other demo rows.
_base_ = ["../paper/adapter_tuning.py", "../_base_/demo.py"]
model = dict(
    data_preprocessor=dict(size=(96, 96)),
    backbone=dict(
        trunk="intern_vit_tiny_demo", img_size=96, trunk_dtype="bfloat16",
        deform_num_heads=4, conv_inplane=16,
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
    ),
    decode_head=dict(in_channels=[96, 96, 96, 96], channels=32),
    auxiliary_head=dict(in_channels=96, channels=32),
    test_cfg=dict(crop_size=(96, 96), stride=(64, 64)),
)
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(pipeline={{_base_.demo_adapter_train_pipeline}}),
)
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(pipeline={{_base_.demo_adapter_test_pipeline}}),
)
test_dataloader = val_dataloader
total_batch_size = 2
optim_wrapper = dict(_delete_=True, type="GradNormOptimWrapper", grad_norm_window=50,
                     max_grad_norm=None,
                     optimizer=dict(type="AdamW", lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
                     constructor="InternViTLayerDecayConstructor",
                     paramwise_cfg=dict(layer_decay_rate=0.95, decay_embeddings=False))
train_cfg = dict(max_iters=40, val_interval=20)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=2),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=41),
]
default_hooks = dict(checkpoint=dict(interval=20), logger=dict(interval=4))
