# The paper's linear_probing, shrunk for the CPU demo (configs/_base_/demo.py).
_base_ = ["../paper/linear_probing.py", "../_base_/demo.py"]
demo = dict(out_indices=[2], max_iters=320)
