"""Runner hooks of our own."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from mmengine.hooks import Hook

from mmseg.registry import HOOKS

from ..env import versions
from ..errors import EXIT_DRIFTED, InputError
from ..io import read_json, save_torch, write_json
from ..results.drift import DEFAULT_TOLERANCE, DRIFT_STOP_FILE, Band, read_reference
from .resilience import checkpoint_now
from .result import trainable_state


class TrainingDiverged(InputError):
    """The loss became NaN or infinite; the message names the iteration and what is kept."""


@HOOKS.register_module()
class VersionsMetaHook(Hook):
    """Stamps library versions into every checkpoint's ``meta`` (config text, class names and
    palette are already put there by mmengine)."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("meta", {})["versions"] = versions()


@HOOKS.register_module()
class PlainMessageHubHook(Hook):
    """Keeps the Runner's checkpoints loadable with ``torch.load(weights_only=True)``.

    The message hub's ``HistoryBuffer`` objects pickle numpy arrays and the buffer's
    statistics methods (through ``getattr``), which a weights-only load refuses. They are
    saved as plain tensors (float64 and int64 hold numpy's values exactly) and rebuilt on
    load, so a resumed run logs and trains exactly as before. Numpy scalars in the runtime
    info (the ETA) become Python numbers, which hold the same value.
    """

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub and "log_scalars" in hub:
            # a new dict: the hub's state may share objects with the live hub
            checkpoint["message_hub"] = hub = dict(hub, log_scalars={
                key: plain_history(buffer) for key, buffer in hub["log_scalars"].items()})
        if hub and "runtime_info" in hub:
            hub["runtime_info"] = {key: value.item() if isinstance(value, np.generic) else value
                                   for key, value in hub["runtime_info"].items()}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        hub = checkpoint.get("message_hub")
        if hub and "log_scalars" in hub:
            hub["log_scalars"] = {key: history_buffer(value) if isinstance(value, dict) else value
                                  for key, value in hub["log_scalars"].items()}


def plain_history(buffer) -> dict:
    import torch

    from mmengine.logging import HistoryBuffer

    if not isinstance(buffer, HistoryBuffer):
        return buffer
    return dict(log_history=torch.from_numpy(buffer._log_history.copy()),
                count_history=torch.from_numpy(buffer._count_history.copy()),
                max_length=int(buffer.max_length))


def history_buffer(state: dict):
    from mmengine.logging import HistoryBuffer

    return HistoryBuffer(state["log_history"].numpy(), state["count_history"].numpy(),
                         state["max_length"])


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stops the run when the loss is not finite, before the checkpoint hook could save the
    diverged state: the newest checkpoint in the work dir stays the last finite one. Every
    rank learns of a NaN on any rank, so they all stop at the same iteration."""

    priority = "ABOVE_NORMAL"  # before CheckpointHook (VERY_LOW) and PreemptionHook

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        import torch
        from mmengine import dist

        loss = (outputs or {}).get("loss")
        if loss is None:
            return
        loss = torch.as_tensor(loss).detach().float().sum()
        bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0])
        if dist.get_world_size() > 1:
            dist.all_reduce(bad, op="max")
        if bad.item():
            last = runner.message_hub.get_info("last_ckpt") or "none (no checkpoint yet)"
            raise TrainingDiverged(f"loss is {loss.item()} at "
                                   f"iteration {runner.iter + 1} of {runner.cfg.work_dir}; "
                                   f"last finite checkpoint: {last}")


@HOOKS.register_module()
class BestWeightsHook(Hook):
    """Keeps the weights of the best validations, as the original's ``save_best`` does, but
    weights only: after a validation whose ``metric`` beats every earlier one, the state a
    run's result holds (``trainable_state``: a frozen trunk left out) in ``dtype``, written
    atomically to ``best_<metric>_iter_<N>.pth`` in the work dir; the ``keep`` best stay.
    No optimizer state, so a file is a sixth of a resume checkpoint in bf16. Runs before
    mmengine's EMAHook swaps the raw weights back: with EMA it keeps the validated (EMA) ones.
    """

    priority = "ABOVE_NORMAL"

    def __init__(self, metric: str = "mIoU", keep: int = 1, dtype: str = "bfloat16"):
        import torch

        if keep < 1:
            raise InputError(f"BestWeightsHook: keep is {keep}; it keeps at least one file")
        self.metric, self.keep, self.dtype = metric, keep, getattr(torch, dtype)
        self.best: float | None = None
        self.kept: list[str] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        value = (metrics or {}).get(self.metric)
        if value is None or (self.best is not None and value <= self.best):
            return
        self.best = float(value)
        # collective under sharding: every rank calls it
        state = trainable_state(runner, as_validated=True)
        if runner.rank != 0:
            return
        state = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in state.items()}
        name = f"best_{self.metric}_iter_{runner.iter}.pth"
        save_torch(Path(runner.work_dir) / name, dict(
            meta=dict(iteration=runner.iter, metric=self.metric, value=self.best),
            state_dict=state))
        self.kept.append(name)
        while len(self.kept) > self.keep:
            (Path(runner.work_dir) / self.kept.pop(0)).unlink(missing_ok=True)
        runner.logger.info(f"best {self.metric} {self.best:.2f} at {runner.iter}: {name}")

    # remembered in the resume checkpoints: a resumed run keeps comparing with its best
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["best_weights"] = dict(best=self.best, kept=list(self.kept))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("best_weights") or {}
        self.best, self.kept = saved.get("best"), list(saved.get("kept", []))


class RunDrifted(InputError):
    """--stop-on-drift stopped the run (exit 3); the message says what left the band, where,
    and which checkpoint is kept."""

    exit_code = EXIT_DRIFTED


def updates_every(runner) -> int:
    """Loop iterations per optimizer update: with gradient accumulation an iteration is a
    micro-batch, and the original's iterations are updates."""
    return getattr(runner.optim_wrapper, "_accumulative_counts", 1)


def mean_over_ranks(value: float) -> float:
    """The mean of a per-rank value over the ranks, as the original's logged loss was (mmseg
    0.x averaged its log variables over the ranks); every rank gets the same number, so all
    decide alike."""
    import torch
    from mmengine import dist

    if dist.get_world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total, op="mean")
    return float(total.item())


@HOOKS.register_module()
class DriftHook(Hook):
    """Compares the run, while it trains, with the original's published log of the same
    trunk, experiment and dataset (:mod:`internseg.results.drift`): at each iteration the log
    has a training line for, our mean loss over the window of that line against the original's
    window mean; at each validation the log has, our mIoU against the original's. Logs
    ``drift/loss_gap`` and ``drift/miou_gap`` (ours minus the original's) and the band's
    half-width ``drift/loss_band`` / ``drift/miou_band`` beside the other scalars, and warns
    once, loudly, the first time a gap leaves its band. Only reads: the weights are unchanged
    (engine/identity.py counts it among the observing hooks). A window that a resume cut is
    skipped; whether the run left the band is kept in its checkpoints."""

    priority = "NORMAL"  # before LoggerHook (BELOW_NORMAL): a gap is logged in its own line

    def __init__(self, reference_log: str, tolerance: float = DEFAULT_TOLERANCE):
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
                math.isfinite(tolerance) and tolerance > 0):
            raise InputError(f"DriftHook: tolerance is {tolerance!r}, not a number > 0 (the "
                             "band in spreads of the original's log)")
        self.reference = read_reference(reference_log)
        self.tolerance = float(tolerance)
        # the first departure, as one line; None while the run follows the original
        self.departure: str | None = None
        self._losses: dict[int, list[float]] = {}  # original's iteration -> our losses
        self._span = max((b.end - b.start for b in self.reference.loss.values()), default=0)

    def before_train(self, runner) -> None:
        planned = runner.max_iters // updates_every(runner)
        if self.reference.max_iters and self.reference.max_iters != planned:
            runner.logger.warning(
                f"drift: the original ran {self.reference.max_iters} iterations and this run "
                f"{planned}: their schedules differ, so beyond the first iterations the "
                f"comparison with {self.reference.path} says little")

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        loss = (outputs or {}).get("loss")
        if loss is None:
            return
        every, done = updates_every(runner), runner.iter + 1
        step = -(-done // every)
        self._losses.setdefault(step, []).append(float(loss))
        band = self.reference.loss.get(step)
        if done % every or band is None:
            return
        # no later window reaches back this far
        for old in [i for i in self._losses if i <= step - self._span]:
            del self._losses[old]
        window = range(band.start + 1, step + 1)
        if any(i not in self._losses for i in window):
            return  # resumed inside this window
        ours = [value for i in window for value in self._losses[i]]
        where = (f"mean over iterations {band.start + 1}-{step}" if band.start + 1 < step
                 else f"iteration {step}")
        self._compare(runner, "loss", mean_over_ranks(sum(ours) / len(ours)), band, where)

    def after_val_epoch(self, runner, metrics=None) -> None:
        value = (metrics or {}).get("mIoU")
        band = self.reference.miou.get(runner.iter // updates_every(runner))
        if value is not None and band is not None:
            self._compare(runner, "miou", float(value), band, f"validation at {band.end}")

    def _compare(self, runner, what: str, ours: float, band: Band, where: str) -> None:
        gap, allowed = ours - band.centre, self.tolerance * band.spread
        mode = "val" if what == "miou" else "train"
        runner.message_hub.update_scalar(f"{mode}/drift/{what}_gap", gap)
        runner.message_hub.update_scalar(f"{mode}/drift/{what}_band", allowed)
        if abs(gap) <= allowed or self.departure is not None:
            return
        name = "mIoU" if what == "miou" else "loss"
        self.departure = (
            f"at iteration {band.end}: {name} {ours:.4g} ({where}) is {gap:+.4g} from the "
            f"original's {band.centre:.4g}, beyond {allowed:.3g} ({self.tolerance:g} x the "
            f"spread of its log there, {band.spread:.3g}; {self.reference.path})")
        runner.logger.warning(f"DRIFT: this run has left the original's course {self.departure}."
                              " Warned once; the drift/* scalars follow the gaps")

    # kept in the checkpoints: a resumed run does not warn again
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["drift"] = dict(departure=self.departure)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self.departure = (checkpoint.get("drift") or {}).get("departure")


@HOOKS.register_module()
class DriftStopHook(Hook):
    """--stop-on-drift: ends the run once DriftHook has seen it leave the original's course,
    after that iteration's log line and checkpoint: it saves a checkpoint where CheckpointHook
    did not just save one (after a validation whose iteration has none, at the next
    iteration), records ``drift_stop.json`` in the work dir and raises :class:`RunDrifted`
    (exit 3). Only reads until then; it never changes the weights."""

    priority = "LOWEST"  # after LoggerHook and CheckpointHook

    def before_train(self, runner) -> None:
        found = [h for h in runner.hooks if isinstance(h, DriftHook)]
        if not found:
            raise InputError("DriftStopHook stops on what a DriftHook sees, and the run has "
                             "none (internseg train --reference-log adds both)")
        self.drift = found[0]

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.drift.departure:
            self._stop(runner, checkpoint_now(runner))

    def after_val_epoch(self, runner, metrics=None) -> None:
        saved = str(Path(runner.work_dir) / f"iter_{runner.iter}.pth")
        if self.drift.departure and runner.message_hub.get_info("last_ckpt") == saved:
            self._stop(runner, saved)

    def after_train(self, runner) -> None:
        if self.drift.departure:
            self._stop(runner, runner.message_hub.get_info("last_ckpt"))

    def _stop(self, runner, checkpoint: str | None) -> None:
        from mmengine import dist

        if runner.rank == 0:
            write_json(Path(runner.work_dir) / DRIFT_STOP_FILE, dict(
                departure=self.drift.departure, checkpoint=checkpoint,
                reference_log=self.drift.reference.path, tolerance=self.drift.tolerance))
        # the first rank to exit makes torchrun/srun stop the others: rank 0 must have written
        dist.barrier()
        raise RunDrifted(f"{runner.work_dir}: stopped on drift (--stop-on-drift) "
                         f"{self.drift.departure}; checkpoint kept: {checkpoint}")


def refuse_if_stopped(work_dir: str | Path) -> None:
    """Before a run with --stop-on-drift is built: refuse a work dir whose run stopped on
    drift, naming the record."""
    record = Path(work_dir) / DRIFT_STOP_FILE
    if not record.is_file():
        return
    try:
        departure = read_json(record, "drift stop record").get(
            "departure", "(the record is unreadable)")
    except InputError:
        departure = "(the record is unreadable)"
    raise RunDrifted(f"{record}: this run stopped on drift {departure}; delete the file to "
                     "train it on with --stop-on-drift, or train without it")
