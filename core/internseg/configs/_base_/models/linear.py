# InternViT-6B + linear head (BN over the trunk's channels, 1x1 conv to the classes).
norm_cfg = dict(type="SyncBN", requires_grad=True)
data_preprocessor = dict(
    type="SegDataPreProcessor",
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(504, 504),
)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="InternViT6B",
        # a registered trunk (internseg.trunks): it fixes width, depth, heads, patch and the
        # pretrain grid; `internseg train --trunk` runs the config on another one
        trunk="intern_vit_6b_224px",
        img_size=504,
        mlp_ratio=4.0,
        qkv_bias=False,
        qk_normalization=True,
        layerscale_init=0.1,
        norm_eps=1e-6,
        drop_path_rate=0.4,
        out_indices=[47],
        with_cp=True,
        freeze_trunk=False,
        trunk_dtype="bfloat16",
        # fp32 weights rounded to bf16 per use, like the original's DeepSpeed bf16 runs
        master_weights=True,
        # the trunk's file, given by `internseg train/test --pretrained`
        pretrained=None,
    ),
    decode_head=dict(
        type="LinearHead",
        in_channels=3200,
        in_index=0,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0, avg_non_ignore=False
        ),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="slide", crop_size=(504, 504), stride=(322, 322)),
)
