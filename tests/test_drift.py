"""A run compared with the original's published log while it trains (`internseg train
--reference-log`): the bands the log gives, and the demo run that follows its log, leaves it
(one warning) or is stopped by it with its checkpoint kept."""

import json

import pytest
import torch

from internseg.cli import main
from internseg.engine.identity import training_config
from internseg.engine.train import TrainOptions, build_train_config
from internseg.results.drift import DRIFT_STOP_FILE, Band, bands, drift_args, read_reference

ITERS = 6


def mmcv_line(second: int, text: str) -> str:
    return f"2024-01-10 09:00:{second:02d},000 - mmseg - INFO - {text}"


# Two training lines and a validation in the original's mmcv 1.x format; iteration 100 logged
# twice, as a resumed original does.
LOG = "\n".join([
    mmcv_line(1, "Iter [50/200]\tlr: 1.000e-05, eta: 0:01:00, time: 1.000, data_time: 0.010, "
                 "memory: 35982, decode.loss_ce: 4.0000, decode.acc_seg: 10.0, loss: 4.0000"),
    mmcv_line(2, "Iter [100/200]\tlr: 2.000e-05, eta: 0:00:50, time: 1.000, data_time: 0.010, "
                 "memory: 35982, decode.loss_ce: 3.0000, decode.acc_seg: 20.0, loss: 3.0000"),
    mmcv_line(3, "Iter(val) [250]\taAcc: 0.7000, mIoU: 0.2000, mAcc: 0.3000"),
    mmcv_line(4, "Iter [100/200]\tlr: 2.000e-05, eta: 0:00:50, time: 1.000, data_time: 0.010, "
                 "memory: 35982, decode.loss_ce: 2.0000, decode.acc_seg: 20.0, loss: 2.0000"),
]) + "\n"


def test_bands_are_window_means_with_the_logs_own_spread():
    points = {50: 4.0, 100: 2.0, 150: 2.0, 200: 1.0}
    got = bands(points, 2, centre_on_mean=True)
    # windows of two lines; the first has one value, so its spread is the median spread
    assert got[100] == Band(start=0, end=100, centre=3.0, spread=1.0)
    assert got[150] == Band(start=50, end=150, centre=2.0, spread=0.5)  # floor: median 0.5
    assert got[200] == Band(start=100, end=200, centre=1.5, spread=0.5)
    assert got[50] == Band(start=0, end=50, centre=4.0, spread=0.5)
    # mIoU is compared with the value at that iteration, not the window's mean
    assert bands(points, 2, centre_on_mean=False)[200].centre == 1.0


def test_a_reference_is_read_from_the_mmcv_log(tmp_path):
    log = tmp_path / "original.log"
    log.write_text(LOG)
    reference = read_reference(log)
    assert reference.max_iters == 200
    # both lines are in the window of 10; the later line of a resumed original counts
    assert reference.loss[100] == Band(start=0, end=100, centre=3.0, spread=1.0)
    assert reference.miou[100].centre == 20.0
    log.write_text(mmcv_line(0, "Set random seed to 1234, deterministic: False\n"))
    with pytest.raises(ValueError, match="no training line with a loss and no validation"):
        read_reference(log)


@pytest.mark.parametrize("argv,named", [
    (["--stop-on-drift"], "--reference-log, which is not given"),
    (["--drift-tolerance", "2"], "--reference-log, which is not given"),
    (["--reference-log", "no/such.log"], "no/such.log: cannot read published log"),
])
def test_drift_options_are_checked_before_the_run_is_built(capsys, argv, named):
    assert main(["train", "demo/linear_probing", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err, err


def test_comparing_with_the_original_leaves_the_run_identity(tmp_path):
    log = tmp_path / "original.log"
    log.write_text(LOG)
    plain = build_train_config(TrainOptions(config="demo/linear_probing"), with_start=False)
    watched = build_train_config(TrainOptions(config="demo/linear_probing",
                                              reference_log=str(log), drift_tolerance=2.0,
                                              stop_on_drift=True), with_start=False)
    assert {"DriftHook", "DriftStopHook"} <= {h["type"] for h in watched.custom_hooks}
    assert training_config(watched) == training_config(plain)


# ---------------------------------------------------------------- the demo, end to end


def train(demo_assets, run, extra=()) -> int:
    split = run.parent / "split.txt"
    split.write_text("".join(f"ADE_train_{i:08d}\n" for i in range(1, 9)))
    return main(["train", "demo/linear_probing", "--work-dir", str(run / "work"),
                 "--data-root", str(demo_assets["data_root"]), "--split", str(split),
                 "--pretrained", str(demo_assets["weights"]), "--seed", "0", "--deterministic",
                 "--threads", "2", "--final-checkpoint", str(run / "final.pth"),
                 "--scalars-out", str(run / "scalars.jsonl"),
                 "--cfg-options", f"train_cfg.max_iters={ITERS}", "train_cfg.val_interval=3",
                 "default_hooks.checkpoint.interval=3", "default_hooks.logger.interval=1",
                 *extra])


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]


def work_scalars(run) -> list[dict]:
    (scalars,) = (run / "work").glob("*/vis_data/scalars.json")
    return [json.loads(line) for line in scalars.read_text().splitlines()]


def warnings_in(run) -> list[str]:
    (log,) = (run / "work").glob("*/*.log")
    return [line for line in log.read_text().splitlines() if "DRIFT" in line]


def mmcv_log(scalars: list[dict], loss=lambda x: x, miou=lambda x: x) -> str:
    """A run's losses and validations as the original's mmcv 1.x logger wrote its own: one
    training line per logged iteration holding the mean loss since the line before, and each
    validation (mIoU as a fraction, as mmseg 0.x) after the line of its iteration."""
    train = {r["iter"]: r for r in scalars if "loss" in r}
    # mmengine logs the mean of the last 10 losses; before iteration 10 that is the mean since
    # the start, so the loss of iteration i is i * mean_i - (i - 1) * mean_(i-1)
    losses = {i: i * train[i]["loss"] - (i - 1) * (train[i - 1]["loss"] if i > 1 else 0.0)
              for i in sorted(train)}
    lines = []
    for i, r in sorted(train.items()):
        value = loss(losses[i])
        lines.append(mmcv_line(i, f"Iter [{i}/{ITERS}]\tlr: {r['lr']:.3e}, eta: 0:00:0{ITERS - i}, "
                                  f"time: {r['time']:.3f}, data_time: {r['data_time']:.3f}, "
                                  f"memory: 0, decode.loss_ce: {value:.4f}, "
                                  f"decode.acc_seg: {r['decode.acc_seg']:.4f}, loss: {value:.4f}"))
        lines += [mmcv_line(i, f"Iter(val) [4]\taAcc: {v['aAcc'] / 100:.4f}, mIoU: "
                               f"{miou(v['mIoU']) / 100:.4f}, mAcc: {v['mAcc'] / 100:.4f}")
                  for v in scalars if "mIoU" in v and v["step"] == i]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def original(demo_assets, tmp_path_factory):
    """What a short demo run logs, the stand-in for the original's course."""
    run = tmp_path_factory.mktemp("original") / "run"
    assert train(demo_assets, run) == 0
    scalars = rows(run)
    assert [r["iter"] for r in scalars if "loss" in r] == list(range(1, ITERS + 1))
    return scalars


def test_a_run_that_follows_the_original_logs_its_gaps_and_does_not_warn(demo_assets,
                                                                        original, tmp_path):
    log = tmp_path / "original.log"
    log.write_text(mmcv_log(original))
    run = tmp_path / "run"
    assert train(demo_assets, run, ["--reference-log", str(log)]) == 0
    scalars = rows(run)
    gaps = {r["step"]: r["drift/loss_gap"] for r in scalars if "drift/loss_gap" in r}
    assert sorted(gaps) == list(range(1, ITERS + 1))
    # the same seed and data retrain the same losses; the log holds them to 4 decimals
    assert all(abs(gap) < 1e-3 for gap in gaps.values()), gaps
    assert all(r["drift/loss_band"] > 0 for r in scalars if "drift/loss_band" in r)
    miou = {r["step"]: r["drift/miou_gap"] for r in scalars if "drift/miou_gap" in r}
    assert sorted(miou) == [3, 6] and all(abs(gap) < 0.01 for gap in miou.values()), miou
    assert warnings_in(run) == []


def test_a_run_that_leaves_the_original_warns_once(demo_assets, original, tmp_path):
    log = tmp_path / "original.log"
    log.write_text(mmcv_log(original, loss=lambda x: x / 4, miou=lambda x: min(x + 40, 99)))
    run = tmp_path / "run"
    assert train(demo_assets, run, ["--reference-log", str(log)]) == 0
    scalars = rows(run)
    ours = {r["iter"]: r for r in original if "loss" in r}
    gaps = {r["step"]: r["drift/loss_gap"] for r in scalars if "drift/loss_gap" in r}
    # at iteration 1 the window is that iteration alone: ours minus a quarter of it
    assert gaps[1] == pytest.approx(0.75 * ours[1]["loss"], abs=1e-3)
    assert all(gap > 0.5 for gap in gaps.values())
    assert all(r["drift/miou_gap"] < -30 for r in scalars if "drift/miou_gap" in r)
    (warning,) = warnings_in(run)  # one warning, though every point is outside its band
    assert "left the original's course at iteration 1: loss" in warning and str(log) in warning
    assert (run / "final.pth").is_file()  # without --stop-on-drift it trains on


def test_stop_on_drift_stops_early_and_keeps_the_checkpoint(demo_assets, original, tmp_path,
                                                            capsys):
    log = tmp_path / "original.log"
    log.write_text(mmcv_log(original, loss=lambda x: x / 4))
    run = tmp_path / "run"
    assert train(demo_assets, run, ["--reference-log", str(log), "--stop-on-drift"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"internseg train: error: {run / 'work'}: stopped on drift "
                              "(--stop-on-drift) at iteration 1: loss"), err[-1]
    # after its first iteration, with that iteration's checkpoint and log line written
    checkpoint = torch.load(run / "work" / "iter_1.pth", weights_only=True)
    assert checkpoint["meta"]["iter"] == 1
    assert checkpoint["drift"]["departure"].startswith("at iteration 1: loss")
    assert [r["step"] for r in work_scalars(run) if "drift/loss_gap" in r] == [1]
    record = json.loads((run / "work" / DRIFT_STOP_FILE).read_text())
    assert record["checkpoint"] == str(run / "work" / "iter_1.pth")
    assert not (run / "final.pth").exists()
    # the workflow's retry with the same options is refused before anything is built
    assert train(demo_assets, run, ["--reference-log", str(log), "--stop-on-drift",
                                    "--auto-resume"]) == 3
    assert f"{run / 'work' / DRIFT_STOP_FILE}: this run stopped on drift at iteration 1" in (
        capsys.readouterr().err)


def test_a_validation_that_leaves_the_original_stops_at_its_own_checkpoint(demo_assets,
                                                                          original, tmp_path):
    log = tmp_path / "original.log"
    log.write_text(mmcv_log(original, miou=lambda x: min(x + 40, 99)))
    run = tmp_path / "run"
    assert train(demo_assets, run, ["--reference-log", str(log), "--stop-on-drift"]) == 3
    record = json.loads((run / "work" / DRIFT_STOP_FILE).read_text())
    # the loss follows; the validation at 3 does not, and CheckpointHook saved iteration 3
    assert record["departure"].startswith("at iteration 3: mIoU")
    assert record["checkpoint"] == str(run / "work" / "iter_3.pth")
    assert sorted(p.name for p in (run / "work").glob("iter_*.pth")) == ["iter_3.pth"]


@pytest.mark.parametrize("settings,tolerance,stop", [
    (None, None, False),  # no `drift` in config.yaml: the defaults
    ({"tolerance": None, "stop": False}, None, False),
    ({"tolerance": 2.5, "stop": True}, 2.5, True),
])
def test_config_yamls_drift_settings_become_the_train_commands_options(settings, tolerance,
                                                                       stop):
    from internseg.cli import build_parser

    args = build_parser().parse_args(["train", "demo/linear_probing",
                                      *drift_args("logs/original.log", settings)])
    assert (args.reference_log, args.drift_tolerance, args.stop_on_drift) == (
        "logs/original.log", tolerance, stop)
