# Few-shot 1/16: linear head on block 47, whole trunk trained; 5000 iterations on 1263 images.
_base_ = ["../_base_/fewshot.py"]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="few-shot",
    fraction=16,
    paper_miou=46.5,
    published_log="linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.log",
    released_checkpoint=dict(
        file="linear_intern_vit_6b_504_5k_ade20k_bs16_lr4e-5_1of16.pth",
        sha256="1757bc807bf42af1a837cdf7df36c1264d822ab10e82f959c29da56608cae722", size=11813388547),
)
max_iters = 5000
warmup_iters = 100
