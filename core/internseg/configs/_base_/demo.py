# What the CPU demo's configs share: pipelines at 84 px crops (6 patches of 14; 96 for the
# adapter, whose sides are multiples of 32), scaled from the paper's 504 (512) as crop / 504
# (512). A demo config inherits its paper config and this file and states the rest itself (the
# tiny trunk, its blocks and widths, the schedule), so that what it says is what runs;
# tests/test_configs.py checks that it differs from its paper config in nothing else.
demo_train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(336, 84), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=(84, 84), cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
demo_setr_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="ShortSideResize", short_side=84),
    dict(type="ResizeToMultiple", size_divisor=14),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
demo_capped_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(336, 84), keep_ratio=True),
    dict(type="ResizeToMultiple", size_divisor=14),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
demo_adapter_train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="RandomResize", scale=(384, 96), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=(96, 96), cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
demo_adapter_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="ShortSideResize", short_side=96),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
