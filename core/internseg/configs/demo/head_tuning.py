# The paper's head_tuning, shrunk for the CPU demo (configs/_base_/demo.py).
_base_ = ["../paper/head_tuning.py", "../_base_/demo.py"]
demo = dict(out_indices=[0, 1, 2, 3], max_iters=320)
