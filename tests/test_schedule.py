import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS

import internseg.plugin  # noqa: F401  (registers models and hooks, as custom_imports does)
from internseg.config import load_config



def lr_trace(experiment, iterations):
    cfg = load_config(f"paper/{experiment}")
    model = torch.nn.Linear(2, 2)
    optim_cfg = dict(type="OptimWrapper", optimizer=dict(cfg.optim_wrapper.optimizer))
    wrapper = build_optim_wrapper(model, optim_cfg)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper.optimizer))
                  for s in cfg.param_scheduler]
    trace = {}
    for it in range(max(iterations) + 1):
        if it in iterations:
            trace[it] = wrapper.optimizer.param_groups[0]["lr"]
        wrapper.optimizer.step()
        for s in schedulers:
            s.step()
    return cfg, trace


def expected_lr(it, base, warmup, total, ratio=1e-6):
    poly = base * (1 - it / total)
    if it >= warmup:
        return poly
    return poly * (1 - (1 - it / warmup) * (1 - ratio))


@pytest.mark.parametrize("experiment,points", [
    ("fewshot_1of16", [0, 1, 50, 99, 100, 101, 2500, 4999]),
    ("head_tuning", [0, 750, 1499, 1500, 40000, 79999]),
])
def test_warmup_multiplies_poly(experiment, points):
    cfg, trace = lr_trace(experiment, points)
    total, warmup = cfg.train_cfg.max_iters, cfg.param_scheduler[0].end - 1
    for it in points:
        assert trace[it] == pytest.approx(expected_lr(it, 4e-5, warmup, total), rel=1e-6,
                                          abs=1e-15), it
