# The CPU demo's one schedule. A demo config is its paper config moved to `trunk`, then this
# (internseg.config.demo_config): every size in its pipelines and its slide window scaled by
# crop / the paper's crop (84 = 6 patches of 14, from 504), `batch_size` images a step on one
# process, `lr` (a random 96-wide trunk learns nothing in a few hundred steps at 4e-5),
# UperNet heads `head_channels` wide. `max_iters` per setting stands for the paper's
# `paper_iters`; a row of fewer paper iterations gets as many fewer (few-shot 1/16: 5000 ->
# 20), its warmup its share (at least one step), validation and checkpoints at half, a log
# line every tenth. A row that wants other demo settings states them, and a `demo_schedule`
# of its own, in configs/demo/<name>.py (the adapter, linear probing).
# tests/test_configs.py checks that a demo config differs from its paper config in nothing else.
demo_schedule = dict(
    trunk="intern_vit_tiny_demo",
    crop=84,
    batch_size=2,
    lr=2e-3,
    head_channels=32,
    paper_iters=80000,
    max_iters={"few-shot": 320, "linear probing": 160, "head tuning": 160,
               "full tuning": 160, "adapter tuning": 40},
)
