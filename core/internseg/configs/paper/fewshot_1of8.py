# Few-shot 1/8: linear head on block 47, whole trunk trained; 10000 iterations on 2526 images.
_base_ = ["../_base_/fewshot.py"]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="few-shot",
    fraction=8,
    paper_miou=50.0,
    published_log="linear_intern_vit_6b_504_10k_ade20k_bs16_lr4e-5_1of8.log",
    released_checkpoint=dict(
        file="linear_intern_vit_6b_504_10k_ade20k_bs16_lr4e-5_1of8.pth",
        sha256="d188f8e9ea1b193d07c8a2beae116abfa9819e8c29ee71560e9487d50f141399"),
)
max_iters = 10000
warmup_iters = 200
