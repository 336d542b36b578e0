# ADE20K at a 512 crop (32x32 patches of 16 px), for the adapter: train scale (2048, 512),
# test with SETR_Resize to short side 512 (long side uncapped), as the fork's adapter config.
_base_ = ["./ade20k_504.py"]
crop_size = (512, 512)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
# slide windows of 512 cover the image: no rounding to the patch is needed
setr_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="ShortSideResize", short_side=512),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=setr_test_pipeline))
test_dataloader = val_dataloader
