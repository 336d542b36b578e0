# InternViT-6B + resamplers + UPerHead, auxiliary FCN head (loss weight 0.4).
_base_ = ["./linear.py"]
norm_cfg = dict(type="SyncBN", requires_grad=True)
model = dict(
    backbone=dict(out_indices=[11, 23, 35, 47]),
    # bf16 compute, fp32 maps out: the original's resamplers are part of its bf16 backbone
    neck=dict(type="FeatureResampler", embed_dim=3200, compute_dtype="bfloat16"),
    decode_head=dict(
        _delete_=True,
        type="UPerHead",
        in_channels=[3200, 3200, 3200, 3200],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=1536,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, avg_non_ignore=False
        ),
    ),
    auxiliary_head=dict(
        type="FCNHead",
        in_channels=3200,
        in_index=2,
        channels=1536,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4, avg_non_ignore=False
        ),
    ),
)
