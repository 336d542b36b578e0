# Few-shot 1/1: linear head on block 47, whole trunk trained; 80000 iterations on 20210 images.
_base_ = ["../_base_/fewshot.py"]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="few-shot",
    fraction=1,
    paper_miou=57.2,
    published_log="linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_1of1.log",
    released_checkpoint=dict(
        file="linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_1of1.pth",
        sha256="845252be84ce5d56f0223d57dcb38a451db5f80c6718cf88f3bf322771742748", size=11813388547),
)
max_iters = 80000
warmup_iters = 1500
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
