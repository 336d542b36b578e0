# Head tuning: frozen trunk, resamplers + UperNet trained; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="head tuning",
    fraction=1,
    paper_miou=54.9,
    published_log="upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.log",
    released_checkpoint=dict(
        # heads and resamplers only
        file="upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth",
        sha256="eb3e92b685f89a061f32569aa8a1d3b89732efd11288900332ecd5268f6ba1b6", size=959859699),
)
model = dict(
    backbone=dict(drop_path_rate=0.0, freeze_trunk=True),
    auxiliary_head=dict(in_index=1),
)
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
