# The paper's full_tuning, shrunk for the CPU demo (configs/_base_/demo.py).
_base_ = ["../paper/full_tuning.py", "../_base_/demo.py"]
demo = dict(out_indices=[0, 1, 2, 3], max_iters=320)
