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


def test_best_weights_keep_the_n_best_and_remember_them_across_a_resume(tmp_path):
    import logging
    from types import SimpleNamespace

    import torch

    from internseg.engine.hooks import BestWeightsHook

    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    model.head = torch.nn.Linear(2, 3)
    runner = SimpleNamespace(model=model, hooks=[], rank=0, work_dir=str(tmp_path), iter=0,
                             logger=logging.getLogger("test"))
    hook = BestWeightsHook(keep=2)
    for iteration, miou in ((2, 10.0), (4, 15.0), (6, 12.0), (8, 20.0)):
        runner.iter = iteration
        hook.after_val_epoch(runner, {"mIoU": miou, "aAcc": 50.0})
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "best_mIoU_iter_4.pth", "best_mIoU_iter_8.pth"]
    kept = torch.load(tmp_path / "best_mIoU_iter_8.pth", weights_only=True)
    assert kept["meta"]["value"] == 20.0
    assert kept["state_dict"]["head.weight"].dtype == torch.bfloat16
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    resumed = BestWeightsHook(keep=2)
    resumed.after_load_checkpoint(runner, checkpoint)
    runner.iter = 10
    resumed.after_val_epoch(runner, {"mIoU": 19.0})  # below the best before the resume
    assert not (tmp_path / "best_mIoU_iter_10.pth").exists()
    runner.iter = 12
    resumed.after_val_epoch(runner, {"mIoU": 21.0})
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == [
        "best_mIoU_iter_12.pth", "best_mIoU_iter_8.pth"]
