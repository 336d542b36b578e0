# Few-shot 1/1: linear head on block 47, whole trunk trained; 80000 iterations on 20210 images.
_base_ = ["../_base_/fewshot.py"]
experiment = dict(name="fewshot_1of1", head="linear", trunk="trained", fraction=1)
max_iters = 80000
warmup_iters = 1500
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
