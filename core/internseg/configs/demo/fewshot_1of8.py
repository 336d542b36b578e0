# The paper's fewshot_1of8, shrunk for the CPU demo (configs/_base_/demo.py).
_base_ = ["../paper/fewshot_1of8.py", "../_base_/demo.py"]
demo = dict(out_indices=[3], max_iters=40)
