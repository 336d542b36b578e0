# Few-shot 1/2: linear head on block 47, whole trunk trained; 40000 iterations on 10105 images.
_base_ = ["../_base_/fewshot.py"]
experiment = dict(name="fewshot_1of2", head="linear", trunk="trained", fraction=2)
max_iters = 40000
warmup_iters = 800
