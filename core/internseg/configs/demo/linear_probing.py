# The paper's linear_probing, shrunk for a CPU demo by internseg.config.shrink.
_base_ = ["../paper/linear_probing.py"]
demo = dict(out_indices=[2], max_iters=320)
