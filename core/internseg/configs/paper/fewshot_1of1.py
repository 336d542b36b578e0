# Few-shot 1/1: linear head on block 47, whole trunk trained; 80000 iterations on 20210 images
# (the schedule of configs/_base_/default_runtime.py).
_base_ = ["../_base_/fewshot.py"]
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = val_dataloader
