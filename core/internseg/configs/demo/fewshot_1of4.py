# The paper's fewshot_1of4, shrunk for the CPU demo (configs/_base_/demo.py).
_base_ = ["../paper/fewshot_1of4.py", "../_base_/demo.py"]
demo = dict(out_indices=[3], max_iters=80)
