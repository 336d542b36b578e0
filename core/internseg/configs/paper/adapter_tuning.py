# Adapter tuning: the 224 px trunk frozen at patch 16 inside a ViT-Adapter, adapter and UperNet
# trained; 80000 iterations on 20210 images at 512 px (the DeepSpeed fork's adapter config).
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_512.py",
    "../_base_/default_runtime.py",
]
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    # the trunk's arguments come from the model base; the adapter's follow
    backbone=dict(
        type="InternViTAdapter",
        img_size=512,
        # the 14-patch trunk run at patch 16: its kernel (and 16x16 position grid) resized
        # at load
        patch_size=16,
        drop_path_rate=0.0,
        freeze_trunk=True,
        # fp16 as the fork ran it (DeepSpeed fp16 + ToFloat16Hook), not the other rows' bf16
        trunk_dtype="float16",
        out_indices=[0, 1, 2, 3],
        conv_inplane=64,
        n_points=4,
        deform_num_heads=25,
        deform_ratio=0.25,
        init_values=0.0,
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        with_cffn=True,
        cffn_ratio=0.25,
        add_vit_feature=True,
        use_extra_extractor=True,
        use_final_norm=True,
    ),
    # the adapter's four maps are already 1/4 .. 1/32
    neck=None,
    auxiliary_head=dict(in_index=2),
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(341, 341)),
)
# fp16 compute with fp32 masters and a dynamic loss scale (the fork's DeepSpeed ZeRO-1 fp16):
# mmengine's AMP wrapper, which needs a GPU; the CPU demo trains in fp32 with a bf16 trunk
optim_wrapper = dict(type="GradNormAmpOptimWrapper", dtype="float16", loss_scale="dynamic")
