# Linear probing: frozen trunk, linear head on block 44; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/linear.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="linear probing",
    fraction=1,
    paper_miou=47.2,
    published_log="linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.log",
    released_checkpoint=dict(
        # head only: the trunk comes from the pretrained file
        file="linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth",
        sha256="1d1579950d1655d516c8ca31517f37b1586c478f22643709ead1a7cbe0c41e39"),
)
model = dict(backbone=dict(out_indices=[44], drop_path_rate=0.0, freeze_trunk=True))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0), paramwise_cfg=dict(layer_decay_rate=1.0))
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
