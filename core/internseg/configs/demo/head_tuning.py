# The paper's head_tuning, shrunk for a CPU demo by internseg.config.shrink.
_base_ = ["../paper/head_tuning.py"]
demo = dict(out_indices=[0, 1, 2, 3], max_iters=320)
