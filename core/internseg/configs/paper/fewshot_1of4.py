# Few-shot 1/4: linear head on block 47, whole trunk trained; 20000 iterations on 5052 images.
_base_ = ["../_base_/fewshot.py"]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="few-shot",
    fraction=4,
    paper_miou=53.3,
    published_log="linear_intern_vit_6b_504_20k_ade20k_bs16_lr4e-5_1of4.log",
    released_checkpoint=dict(
        file="linear_intern_vit_6b_504_20k_ade20k_bs16_lr4e-5_1of4.pth",
        sha256="dc96a76b23193f09265e516a497ad73acdf57114c8d5fbda53b5a14a5d0ac86f", size=11813388547),
)
max_iters = 20000
warmup_iters = 400
