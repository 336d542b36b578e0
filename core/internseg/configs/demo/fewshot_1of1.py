# The paper's fewshot_1of1, shrunk for a CPU demo by internseg.config.shrink.
_base_ = ["../paper/fewshot_1of1.py"]
demo = dict(out_indices=[3], max_iters=320)
