# The CPU demo: a paper config shrunk by internseg.config.shrink to the tiny registered trunk,
# a small crop and a short budget. A demo config inherits its paper config and this file, and
# states its out_indices (and, if it wants, any other setting below).
demo = dict(
    trunk="intern_vit_tiny_demo",
    crop=112,
    head_channels=32,
    batch_size=4,
    # A random 96-wide trunk learns nothing in a few hundred steps at the paper's 4e-5.
    lr=2e-3,
    evaluations=2,
    max_iters=80,
)
