"""`internseg train`: the original train.py's options on top of mmengine's Runner."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.runner import FlexibleRunner

from ..config import apply_run_options, building_model, load_config
from ..datasets import check_data_root, check_split_images
from ..env import git_commit, hardware, versions
from ..errors import InputError
from ..io import (atomic_path, check_output_file, check_writable, naming_full_disk, save_torch,
                  write_json)
from ..safe_load import check_local, verify_checkpoint
from .batching import apply_batch_plan, plan_batch, process_rank, world_size_from_env
from .disk import KEEP_SUPERSEDED, disk_report, tidy_at_start
from .hooks import refuse_if_stopped
from .identity import (location, make_identity, settle_work_dir, wait_for_identity,
                       work_dir_lock)
from .resilience import InternSegRunner, latest_valid_checkpoint
from .result import trainable_state

log = logging.getLogger("internseg")


@dataclass
class TrainOptions:
    config: str
    trunk: str | None = None
    dataset: str | None = None
    work_dir: str | None = None
    log: str | None = None
    keep_superseded: int | None = None
    load_from: str | None = None
    resume_from: str | None = None
    auto_resume: bool = False
    launcher: str = "none"
    seed: int | None = None
    deterministic: bool = False
    cfg_options: dict = field(default_factory=dict)
    data_root: str | None = None
    split: str | None = None
    pretrained: str | None = None
    final_checkpoint: str | None = None
    scalars_out: str | None = None
    config_out: str | None = None
    provenance_out: str | None = None
    keep_best: int = 0
    ema_momentum: float | None = None
    reference_log: str | None = None
    drift_tolerance: float | None = None
    stop_on_drift: bool = False


def build_train_config(opts: TrainOptions, with_start: bool = True,
                       world_size: int | None = None) -> Config:
    """The config a run trains with: file, then CLI options, in the original's precedence;
    with ``with_start``, also where it starts (see :func:`choose_start`). ``world_size``: the
    processes it runs on (None: the launcher's environment says; the rehearsal names it)."""
    cfg = load_config(opts.config, opts.cfg_options, trunk=opts.trunk, dataset=opts.dataset)
    add_option_hooks(cfg, opts)
    # work dir: CLI, else config, else derived from the config's name
    if opts.work_dir:
        cfg.work_dir = opts.work_dir
    elif not cfg.get("work_dir"):
        cfg.work_dir = str(Path("work_dirs") / Path(opts.config).stem)
    apply_run_options(cfg, data_root=opts.data_root, pretrained=opts.pretrained,
                      launcher=opts.launcher)
    if opts.split:
        cfg.train_dataloader.dataset.ann_file = str(Path(opts.split).resolve())
    if opts.launcher == "none":
        # one process: nothing to shard over
        cfg.pop("strategy", None)
    elif cfg.get("strategy"):
        refuse_ema_on_a_sharded_trunk(cfg, opts.config)
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type="GatheredValidationHook")]
    if world_size is None:
        world_size = world_size_from_env(opts.launcher, os.environ)
    plan = plan_batch(cfg.total_batch_size, cfg.train_dataloader.batch_size, world_size)
    apply_batch_plan(cfg, plan)
    if opts.seed is not None or opts.deterministic:
        cfg.randomness = dict(seed=opts.seed, deterministic=opts.deterministic)
    if with_start:
        choose_start(cfg, opts)
    return cfg


def add_option_hooks(cfg: Config, opts: TrainOptions) -> None:
    """The hooks of the original's training utilities that a run asks for, off as in the paper
    configs: keep the weights of the N best validations (bf16, weights only), or train an EMA
    of the weights (mmengine's EMAHook; validated and exported instead); and the comparison
    with the original's published log (DriftHook, DriftStopHook)."""
    if opts.keep_best:
        cfg.custom_hooks = [*cfg.custom_hooks,
                            dict(type="BestWeightsHook", metric="mIoU", keep=opts.keep_best)]
    if opts.ema_momentum is not None:
        cfg.custom_hooks = [*cfg.custom_hooks, dict(type="EMAHook", momentum=opts.ema_momentum,
                                                    update_buffers=True)]
    if opts.reference_log:
        add_drift_hooks(cfg, opts)
    elif opts.drift_tolerance is not None or opts.stop_on_drift:
        raise InputError("--drift-tolerance and --stop-on-drift compare the run with "
                         "--reference-log, which is not given")


def add_drift_hooks(cfg: Config, opts: TrainOptions) -> None:
    from ..results.drift import DEFAULT_TOLERANCE, read_reference

    # a missing or empty log fails here, not after minutes of building the model
    read_reference(opts.reference_log)
    tolerance = DEFAULT_TOLERANCE if opts.drift_tolerance is None else opts.drift_tolerance
    hooks = [dict(type="DriftHook", reference_log=str(Path(opts.reference_log).resolve()),
                  tolerance=tolerance)]
    if opts.stop_on_drift:
        hooks.append(dict(type="DriftStopHook"))
    cfg.custom_hooks = [*cfg.custom_hooks, *hooks]
    # mmengine averages every logged key with "loss" in its name over 10 values: the gaps
    # are logged as they stand
    cfg.log_processor.custom_cfg = [
        *cfg.log_processor.get("custom_cfg", []),
        *(dict(data_src=f"drift/loss_{what}", method_name="mean", window_size=1)
          for what in ("gap", "band"))]


def choose_start(cfg: Config, opts: TrainOptions) -> None:
    """Where training starts: --resume-from, else (--auto-resume) the work dir's newest
    readable checkpoint, else iteration 0 (from --load-from if given). An explicit checkpoint
    is verified before the Runner builds the model (minutes for 6B): a refused or damaged
    file fails here, naming it. The Runner's own load is weights-only too
    (safe_load.install); auto-resume verifies what it picks."""
    if opts.resume_from:
        verify_checkpoint(opts.resume_from)
        cfg.resume, cfg.load_from = True, opts.resume_from
    elif opts.auto_resume and (latest := latest_valid_checkpoint(cfg.work_dir)):
        # the newest readable iter_N.pth; without one, a fresh start (from --load-from if given)
        cfg.resume, cfg.load_from = True, str(latest)
        log.info("auto-resume: from %s", latest)
    else:
        if opts.auto_resume:
            log.info("auto-resume: no checkpoint in %s, fresh start", cfg.work_dir)
        if opts.load_from:
            verify_checkpoint(opts.load_from)
        cfg.resume, cfg.load_from = False, opts.load_from
    if cfg.load_from and Path(cfg.load_from).is_dir() and not cfg.get("strategy"):
        # said before the model is built (minutes for 6B), not by the Runner's load after it
        raise InputError(f"{cfg.load_from}: a sharded run's checkpoint folder, which only a "
                         "sharded run resumes (--gpus 2 or more); this run trains in one "
                         "process")


def refuse_ema_on_a_sharded_trunk(cfg: Config, config: str) -> None:
    if cfg.get("strategy") and any(hook.get("type") == "EMAHook" for hook in cfg.custom_hooks):
        raise InputError(f"{config}: --ema-momentum on a sharded trunk: mmengine's EMAHook "
                         "keeps a whole copy of the model on every rank; run it on one GPU or "
                         "without EMA")


def check_before_the_ranks(cfg: Config, opts: TrainOptions) -> None:
    """What every rank would refuse, said once by the process that starts them: after a
    rank's own line, torchrun ends with its ChildFailedError traceback. ``cfg`` is the
    config file with the options; the ranks' own resolution drops the sharding strategy
    here, in one process, after the hooks are checked against it."""
    add_option_hooks(cfg, opts)
    require_cuda_for_ranks(cfg, opts.config)
    refuse_ema_on_a_sharded_trunk(cfg, opts.config)
    check_what_the_command_names(build_train_config(opts, with_start=False), opts)


def require_cuda_for_ranks(cfg: Config, config: str) -> None:
    """Several ranks without CUDA work for sharded configs only (gloo, as the tests run
    them); plain data parallelism uses NCCL, which needs GPUs."""
    if not torch.cuda.is_available() and not cfg.get("strategy"):
        raise InputError(f"{config}: several ranks (--gpus/--launcher) need CUDA GPUs, and "
                         "this machine has none (only sharded configs run ranks on CPU)")


def export_scalars(work_dir: Path, out: Path) -> None:
    """Concatenate the per-launch scalars.json files of a (possibly resumed) run, in time order."""
    parts = sorted(work_dir.glob("*/vis_data/scalars.json"))
    with atomic_path(out) as tmp:
        with open(tmp, "w") as dst:
            for part in parts:
                dst.write(part.read_text())


def append_output_to(path: str | Path, what: str) -> None:
    """From here on, everything this process prints (logging, mmengine's log, warnings, an
    error) is appended to ``path``. Called once the work dir is ours: a trainer that the
    work-dir lock refuses never opens the log, so it cannot truncate the one of the trainer
    that holds it (a shell's ``> log`` would, before the trainer even starts). Each start
    writes a header, so the log of a resubmitted run keeps every attempt."""
    log.info("output continues in %s", path)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"==== {stamp} pid {os.getpid()} on {socket.gethostname()}: {what} "
                 "====\n".encode())
    os.dup2(fd, sys.stdout.fileno())
    os.dup2(fd, sys.stderr.fileno())
    os.close(fd)


def run_training(opts: TrainOptions):
    """Train; then write the final checkpoint, the scalars and the config, atomically."""
    cfg = build_train_config(opts, with_start=False)
    # said by the trainer only: the plan and the rehearsal build every run's config
    log.info("batch: %(world_size)d process(es) x %(per_gpu)d per GPU x %(accumulation)d "
             "accumulation = %(effective)d", cfg.batch_plan)
    if opts.launcher != "none":
        require_cuda_for_ranks(cfg, opts.config)
    outputs = check_what_the_command_names(cfg, opts)
    log.info("internseg train %s; versions %s", opts.config, versions())
    identity = make_identity(cfg, split=opts.split, pretrained=cfg.model.backbone.get("pretrained"),
                             load_from=opts.load_from, data_root=opts.data_root)
    log.info("run identity %s: %s", identity["digest"][:12], identity["components"])
    cfg.custom_hooks = [*cfg.custom_hooks, dict(type="RunIdentityHook", digest=identity["digest"])]
    leader = process_rank(opts.launcher, os.environ) == 0
    with work_dir_lock(cfg.work_dir) if leader else nullcontext():
        if leader:
            if opts.log:
                append_output_to(opts.log, f"internseg train {opts.config}, work dir "
                                 f"{cfg.work_dir}, run {identity['digest'][:12]}")
            settle_work_dir(cfg.work_dir, identity, keep=bool(opts.resume_from))
            tidy_at_start(cfg.work_dir, KEEP_SUPERSEDED if opts.keep_superseded is None
                          else opts.keep_superseded, identity["digest"])
        else:
            wait_for_identity(cfg.work_dir, identity["digest"])
        try:
            if opts.stop_on_drift:
                refuse_if_stopped(cfg.work_dir)
            choose_start(cfg, opts)
            # a "strategy" in the config (trained-trunk runs on several GPUs) selects
            # sharding, whose Runner builds the model in train()
            # mmengine's own writes in the work dir (config dump, scalars) name no file on a
            # full disk; our checkpoints name theirs
            with naming_full_disk(cfg.work_dir), building_model(cfg, opts.config):
                runner = (FlexibleRunner if cfg.get("strategy") else
                          InternSegRunner).from_cfg(cfg)
                runner.train()
            state = trainable_state(runner)
            if runner.rank == 0:
                write_outputs(runner, cfg, opts, state, identity)
        finally:
            if leader:  # finished, stopped or failed: what stays on disk is said
                log.info(disk_report(cfg.work_dir, outputs.values()))
    return runner


def check_what_the_command_names(cfg: Config, opts: TrainOptions) -> dict[str, str]:
    """The files and folders of the command, checked before anything is built (minutes for
    6B) or trained; returns the output files by option."""
    for what, path in (("--load-from", opts.load_from), ("--resume-from", opts.resume_from),
                       ("--pretrained", opts.pretrained)):
        if path:
            check_local(path, what)
    check_data_root(cfg, ("train_dataloader", "val_dataloader"), given=bool(opts.data_root))
    if opts.split:
        check_split_images(opts.split, cfg.train_dataloader.dataset)
    outputs = {what: out for what, out in (
        ("--log-file", opts.log), ("--final-checkpoint", opts.final_checkpoint),
        ("--scalars-out", opts.scalars_out), ("--config-out", opts.config_out),
        ("--provenance-out", opts.provenance_out)) if out}
    for what, out in outputs.items():
        check_output_file(out, what)
    check_writable(location(cfg.work_dir), "work dir")  # a link's target, made if missing
    return outputs


def provenance(runner, cfg: Config, identity: dict) -> dict:
    """What made a run's weights, for the report: code, libraries, inputs, hardware."""
    return dict(
        git_commit=git_commit(),
        versions=versions(),
        run_identity=identity["digest"],
        **identity["components"],
        iterations=runner.iter,
        world_size=cfg.batch_plan["world_size"],
        **hardware(),
    )


def write_outputs(runner, cfg: Config, opts: TrainOptions, state: dict, identity: dict) -> None:
    meta = dict(
        config=cfg.pretty_text,
        iteration=runner.iter,
        seed=runner.seed,
        run_identity=identity["digest"],
        run_identity_components=identity["components"],
        batch_plan=cfg.batch_plan,
        versions=versions(),
        dataset_meta=dict(runner.train_dataloader.dataset.metainfo),
    )
    if opts.final_checkpoint:
        # plain JSON types only: the file must load with torch.load(weights_only=True)
        meta = json.loads(json.dumps(meta, default=str))
        save_torch(opts.final_checkpoint, dict(meta=meta, state_dict=state))
    if opts.scalars_out:
        export_scalars(Path(cfg.work_dir), Path(opts.scalars_out))
    if opts.provenance_out:
        write_json(opts.provenance_out, provenance(runner, cfg, identity))
    if opts.config_out:
        with atomic_path(opts.config_out) as tmp:
            cfg.dump(str(tmp))


def configure_threads(threads: int | None) -> None:
    """Honour a scheduler's CPU allotment (Snakemake's `threads`, Slurm's cpus-per-task)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
