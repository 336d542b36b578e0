# Few-shot 1/4: linear head on block 47, whole trunk trained; 20000 iterations on 5052 images.
_base_ = ["../_base_/fewshot.py"]
experiment = dict(name="fewshot_1of4", head="linear", trunk="trained", fraction=4)
max_iters = 20000
warmup_iters = 400
