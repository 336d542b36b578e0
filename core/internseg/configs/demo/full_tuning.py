# The paper's full_tuning, shrunk for a CPU demo by internseg.config.shrink.
_base_ = ["../paper/full_tuning.py"]
demo = dict(out_indices=[0, 1, 2, 3], max_iters=320)
