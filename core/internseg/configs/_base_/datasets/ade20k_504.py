# ADE20K at a 504 crop (36x36 patches of 14 px). Paths are set by `internseg train/test`;
# `--dataset` moves a config to another registered dataset (internseg.datasets).
dataset_type = "ADE20KDataset"
data_root = "resources/ade/ADEChallengeData2016"
crop_size = (504, 504)
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),  # reduce_zero_label comes from the dataset
    dict(type="RandomResize", scale=(2016, 504), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
# The original's 1/1, linear-probing, head-tuning and full-tuning configs test with SETR_Resize:
# short side to 504, long side uncapped; patch 14: both sides rounded up so that every pixel
# falls in a whole patch.
setr_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="ShortSideResize", short_side=504),
    dict(type="ResizeToMultiple", size_divisor=14),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
# Its 1/16 to 1/2 configs cap the long side at 2016 instead (configs/_base_/fewshot.py).
capped_test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2016, 504), keep_ratio=True),
    dict(type="ResizeToMultiple", size_divisor=14),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
train_dataloader = dict(
    batch_size=2,  # per GPU; 8 GPUs make the paper's 16
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=True,
        data_prefix=dict(img_path="images/training", seg_map_path="annotations/training"),
        ann_file="",
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        reduce_zero_label=True,
        data_prefix=dict(img_path="images/validation", seg_map_path="annotations/validation"),
        pipeline=setr_test_pipeline,
    ),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="PerClassIoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator
