# The paper's fewshot_1of2, shrunk for a CPU demo by internseg.config.shrink.
_base_ = ["../paper/fewshot_1of2.py"]
demo = dict(out_indices=[3], max_iters=160)
