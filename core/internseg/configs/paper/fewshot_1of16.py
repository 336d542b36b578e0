# Few-shot 1/16: linear head on block 47, whole trunk trained; 5000 iterations on 1263 images.
_base_ = ["../_base_/fewshot.py"]
experiment = dict(name="fewshot_1of16", head="linear", trunk="trained", fraction=16)
max_iters = 5000
warmup_iters = 100
