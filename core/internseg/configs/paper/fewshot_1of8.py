# Few-shot 1/8: linear head on block 47, whole trunk trained; 10000 iterations on 2526 images.
_base_ = ["../_base_/fewshot.py"]
experiment = dict(name="fewshot_1of8", head="linear", trunk="trained", fraction=8)
max_iters = 10000
warmup_iters = 200
