"""What a run shows while it trains: gradient norms per update, TensorBoard event files."""

import math

import pytest
import torch
from mmengine.logging import MessageHub

from internseg.engine.observe import GRAD_NORM, GradNormOptimWrapper, window_stats


def test_grad_norm_is_recorded_once_per_update_with_its_window():
    hub = MessageHub.get_instance("test_grad_norm")
    model = torch.nn.Linear(3, 2)
    wrapper = GradNormOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                                   accumulative_counts=2, grad_norm_window=2)
    wrapper.message_hub = hub
    wrapper.initialize_count_status(model, 0, 6)
    for step in range(6):
        wrapper.update_params(model(torch.full((1, 3), float(step + 1))).sum())
    # update k accumulates x = a and x = a + 1 (a = 2k + 1), each loss halved: the weight's
    # six entries get (2a + 1) / 2, the bias's two entries 1, whatever the weights are
    expected = [math.sqrt(6 * ((2 * a + 1) / 2) ** 2 + 2) for a in (1, 3, 5)]
    values = list(hub.log_scalars[GRAD_NORM].data[0])
    assert values == pytest.approx(expected), "once per optimizer update, not per micro-batch"
    mean, std = window_stats(expected[-2:])
    assert hub.get_scalar(f"{GRAD_NORM}_mean").current() == pytest.approx(mean)
    assert hub.get_scalar(f"{GRAD_NORM}_std").current() == pytest.approx(std)


def test_window_stats_are_mean_and_population_std():
    assert window_stats([1, 3]) == (2.0, 1.0)
    assert window_stats([5]) == (5.0, 0.0)


def test_clipping_is_off_unless_asked_and_then_reports_the_norm_before_clipping():
    hub = MessageHub.get_instance("test_clip")
    model = torch.nn.Linear(3, 1, bias=False)
    wrapper = GradNormOptimWrapper(torch.optim.SGD(model.parameters(), lr=1.0),
                                   max_grad_norm=1.0)
    wrapper.message_hub = hub
    before = model.weight.detach().clone()
    wrapper.update_params(model(torch.full((1, 3), 2.0)).sum())  # grad (2, 2, 2)
    assert hub.get_scalar(GRAD_NORM).current() == pytest.approx(math.sqrt(12))
    # the step applied the gradient clipped to norm 1
    assert (model.weight.detach() - before).norm().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="max_grad_norm"):
        GradNormOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0), max_grad_norm=0)
