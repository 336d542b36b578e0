# Few-shot 1/2: linear head on block 47, whole trunk trained; 40000 iterations on 10105 images.
_base_ = ["../_base_/fewshot.py"]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="few-shot",
    fraction=2,
    paper_miou=55.8,
    published_log="linear_intern_vit_6b_504_40k_ade20k_bs16_lr4e-5_1of2.log",
    released_checkpoint=dict(
        file="linear_intern_vit_6b_504_40k_ade20k_bs16_lr4e-5_1of2.pth",
        sha256="809e4a17e0ca27cb050bf7a526e9b9be474b54b13b435cacc02708f110bf5d3a", size=11813388547),
)
max_iters = 40000
warmup_iters = 800
