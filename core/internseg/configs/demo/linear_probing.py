# The paper's linear_probing on the CPU demo (configs/_base_/demo.py), reading the tiny
# trunk's third block: the paper's block 44 has no counterpart among its 4.
_base_ = ["../paper/linear_probing.py"]
model = dict(backbone=dict(out_indices=[2]))
