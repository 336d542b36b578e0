"""The `internseg` command that every workflow rule calls: every subcommand, and the one
handler that turns an expected problem into one line (exit 2).

Heavy imports (torch, mmseg) happen inside the subcommands so that light steps start fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path

from . import argtypes
from .argtypes import int_at_least
from .errors import EXIT_DRIFTED, EXIT_INPUT, InputError

log = logging.getLogger("internseg")


def _dict_action():
    from mmengine.config import DictAction

    class KeyValueAction(DictAction):
        """mmengine's DictAction, whose word without '=' is a ValueError with a traceback:
        here an argparse error naming the option and the word."""

        def __call__(self, parser, namespace, values, option_string=None):
            for word in values:
                if "=" not in word:
                    raise argparse.ArgumentError(
                        self, f"{word!r} is not KEY=VALUE (e.g. train_cfg.max_iters=100)")
            super().__call__(parser, namespace, values, option_string)

    return KeyValueAction


def add_run_selection(p) -> None:
    """A config and where it runs: its own trunk and dataset unless others are named."""
    p.add_argument("config", help="config file, or <preset>/<experiment>, e.g. demo/head_tuning")
    p.add_argument("--trunk", help="run the config on this registered trunk (internseg.trunks): "
                   "its heads read the blocks of the same role")
    p.add_argument("--dataset", help="run the config on this registered dataset "
                   "(internseg.datasets): dataset class, folders and class count")
    p.add_argument("--cfg-options", nargs="+", action=_dict_action(), default={},
                   help="override config keys, e.g. train_cfg.max_iters=100 (the schedulers "
                        "that end with the loop follow it)")


# ---------------------------------------------------------------- train, test, inspect


def add_train(sub) -> None:
    from .results.drift import DEFAULT_TOLERANCE, DRIFT_STOP_FILE

    p = sub.add_parser("train", help="train one run (mmengine Runner)")
    add_run_selection(p)
    p.add_argument("--work-dir", help="where checkpoints and logs go "
                   "(default: the config's work_dir, else work_dirs/<config name>)")
    # not --log: torchrun parses the rank command too, and --log abbreviates its --log-dir
    p.add_argument("--log-file", dest="log", metavar="FILE",
                   help="append everything the trainer prints to FILE, from the moment it "
                        "holds the work dir (a second trainer, refused, leaves it alone); each "
                        "start begins with a header line")
    p.add_argument("--keep-superseded", type=int_at_least(0), default=None, metavar="N",
                   help="superseded work dirs of this run (moved aside when its inputs "
                        "changed; brought back and resumed when they are changed back) to "
                        "keep at the start, the newest, besides those of the run starting; "
                        "older ones are removed, each named first (default 1)")
    p.add_argument("--load-from", help="initialise from this checkpoint (no resume)")
    p.add_argument("--resume-from", help="resume optimizer, schedule and iteration from it")
    p.add_argument("--auto-resume", action="store_true",
                   help="resume from the latest checkpoint in the work dir, if any")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--seed", type=argtypes.seed)
    p.add_argument("--seed-record", help="split.json from `internseg split`: train with the "
                   "seed its subset was drawn with, as the original runs did")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--data-root", help="the prepared dataset tree (e.g. ADEChallengeData2016)")
    p.add_argument("--split", help="file of training image stems to train on")
    p.add_argument("--pretrained", help="intern_vit_6b_224px.pth-format trunk checkpoint")
    p.add_argument("--keep-best", type=int_at_least(0), default=0, metavar="N",
                   help="keep the weights of the N best validations (bf16, weights only)")
    p.add_argument("--ema-momentum", type=argtypes.open_unit_interval, metavar="M",
                   help="train an EMA of the weights (mmengine's EMAHook); it is validated and "
                        "exported")
    p.add_argument("--reference-log", metavar="PATH",
                   help="the original's published training log (mmcv 1.x) of this trunk, "
                        "experiment and dataset: its loss and validation mIoU are compared "
                        "with the run's as it trains (drift/* scalars; one warning when a gap "
                        "leaves its band)")
    p.add_argument("--drift-tolerance", type=argtypes.positive_float, metavar="X",
                   help="the band: X times the spread the log shows around each point "
                        f"(default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--stop-on-drift", action="store_true",
                   help=f"stop a run that leaves the band, keeping its checkpoint (exit "
                        f"{EXIT_DRIFTED}; {DRIFT_STOP_FILE} in the work dir then refuses a "
                        "restart with this option)")
    p.add_argument("--final-checkpoint", help="write the trained weights here at the end")
    p.add_argument("--scalars-out", help="write the run's logged scalars (JSON lines) here")
    p.add_argument("--config-out", help="write the config the run used here")
    p.add_argument("--provenance-out", help="write what made the weights here (JSON: git "
                   "commit, versions, run identity and its input sha256s, hardware)")
    p.add_argument("--threads", type=int_at_least(1), help="CPU threads for torch")
    p.add_argument("--gpus", type=int_at_least(0), default=0, help="start one process per GPU "
                   "(srun inside a Slurm allocation, torchrun elsewhere); 0 or 1: this process")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .engine.stops import listening_for_stops

    with listening_for_stops():
        return train_in_this_process(args)


def train_in_this_process(args) -> int:
    from .config import load_config
    from .engine.launch import launch_command
    from .engine.train import (TrainOptions, check_before_the_ranks, configure_threads,
                               run_training)

    fields = TrainOptions.__dataclass_fields__
    opts = TrainOptions(**{k: v for k, v in vars(args).items() if k in fields})
    if args.gpus > 1 and args.launcher == "none":
        # before the ranks start: each would fail on its own, with a traceback
        check_before_the_ranks(load_config(args.config, args.cfg_options, trunk=args.trunk,
                                           dataset=args.dataset), opts)
    command = launch_command(strip_option(args.argv, "--gpus"), args.gpus, args.launcher,
                             os.environ)
    if command:
        log.info("launching %d ranks: %s", args.gpus, " ".join(command))
        os.execvp(command[0], command)

    configure_threads(args.threads)
    if opts.seed is None and args.seed_record:
        opts.seed = read_seed_record(args.seed_record)
    run_training(opts)
    return 0


def read_seed_record(path: str) -> int | None:
    from .io import read_json

    seed = read_json(path, "--seed-record (split record of `internseg split`)").get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InputError(f"--seed-record {path}: seed {seed!r} is not an integer >= 0")
    return seed


def strip_option(argv: list[str], option: str) -> list[str]:
    """argv without ``option`` and its value (both ``--opt V`` and ``--opt=V``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def add_test(sub) -> None:
    p = sub.add_parser("test", help="evaluate a checkpoint: slide inference, metrics.json")
    add_run_selection(p)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--data-root")
    p.add_argument("--pretrained", help="trunk checkpoint, for head-only checkpoints")
    p.add_argument("--work-dir")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--threads", type=int_at_least(1))
    p.set_defaults(func=cmd_test)


def cmd_test(args) -> int:
    from .engine.evaluate import run_test
    from .engine.train import configure_threads
    from .io import check_output_file

    configure_threads(args.threads)
    check_output_file(args.out, "--out")
    result = run_test(args.config, args.checkpoint, args.out, data_root=args.data_root,
                      pretrained=args.pretrained, work_dir=args.work_dir,
                      launcher=args.launcher, cfg_options=args.cfg_options, trunk=args.trunk,
                      dataset=args.dataset)
    print(f"mIoU {result['mIoU']}  mAcc {result['mAcc']}  aAcc {result['aAcc']}  -> {args.out}")
    return 0


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="a run's resolved settings, parameter counts and "
                       "optimizer groups (built on the meta device: no memory used)")
    add_run_selection(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    from .config import building_model, load_config
    from .engine.inspect import describe, resolved_settings

    cfg = load_config(args.config, args.cfg_options, trunk=args.trunk, dataset=args.dataset)
    with building_model(cfg, args.config):
        info = dict(config=args.config, resolved=resolved_settings(cfg), **describe(cfg))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    r, groups = info["resolved"], info["param_groups"]
    print(f"{args.config} on {r['trunk']} (depth {r['depth']}), {r['dataset']} "
          f"({r['num_classes']} classes, {r['dataset_class']} at {r['data_root']}): blocks "
          f"{r['out_indices']}, {r['iterations']} iterations at lr {r['lr']:g}, layer decay "
          f"{r['layer_decay_rate']}")
    print(f"trainable / total {info['summary']} ({info['summary_without_auxiliary_head']} "
          f"without the auxiliary head) (backbone {info['backbone_params']:,}); "
          f"{groups['count']} optimizer groups, lr scale "
          f"{groups['lr_scale_min']:.3g}..{groups['lr_scale_max']:.3g}")
    return 0


# ---------------------------------------------------------------- records and data


def add_records(sub) -> None:
    p = sub.add_parser("records", help="every published number the table compares with, "
                       "with its source")
    p.add_argument("--json", action="store_true", help="a list of objects, one per cell")
    p.set_defaults(func=cmd_records)


def cmd_records(args) -> int:
    from .records import records
    from .results.table import to_markdown

    rows = [r.as_json() for r in records().values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    import pandas as pd

    columns = ["dataset", "trunk", "experiment", "mIoU", "source", "published_log"]
    shown = pd.DataFrame(rows)[columns].assign(mIoU=[f"{r['mIoU']:.1f}" for r in rows])
    print(to_markdown(shown), end="")
    return 0


def add_fetch(sub) -> None:
    from .hub import DEFAULT_REPO_ID

    p = sub.add_parser(
        "fetch", help="download a pinned file from the Hub (or take it from --local-dir) and "
        "verify it", description="Download FILENAME from the Hugging Face Hub at a pinned "
        "commit (or take it from --local-dir), check its size and sha256, and write it "
        "atomically to --out.")
    p.add_argument("filename", metavar="FILENAME", help="file name inside the repo")
    p.add_argument("--out", type=Path, required=True, metavar="PATH", help="destination file")
    p.add_argument("--repo-id", default=DEFAULT_REPO_ID, metavar="ID")
    p.add_argument("--revision", metavar="REV", help="40-hex commit id of the repo")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 (unpinned if omitted)")
    p.add_argument("--size", type=int, metavar="N",
                   help="expected size in bytes (unpinned if omitted)")
    p.add_argument("--local-dir", type=Path, metavar="DIR",
                   help="take the file from DIR instead of the Hub")
    p.set_defaults(func=cmd_fetch)


def cmd_fetch(args) -> int:
    from .hub import fetch_file

    print(fetch_file(args.filename, repo_id=args.repo_id, revision=args.revision,
                     dest=args.out, sha256=args.sha256, size=args.size,
                     local_dir=args.local_dir))
    return 0


def add_pin_options(p) -> None:
    """How a dataset's files are checked and where they are downloaded from."""
    p.add_argument("--pin", action="append", default=[], metavar="FILE=HEX",
                   help="the sha1 or sha256 FILE must have, over its published one or, for a "
                        "file none is published for, over the digest recorded at its first "
                        "preparation (repeatable)")
    p.add_argument("--unpinned", action="store_true",
                   help="check no published size or digest (synthetic stand-ins: the demo); "
                        "a file with none published is still held to its recorded digest")
    p.add_argument("--mirror", metavar="URL",
                   help="download from <URL>/<file name> instead of the entry's addresses "
                        "(the pins still apply)")


def pins_of(args) -> dict[str, str]:
    pins = {}
    for word in args.pin:
        name, sep, digest = word.partition("=")
        if not sep or not name or not digest:
            raise InputError(f"--pin {word!r}: expected FILE=HEX")
        pins[name] = digest
    return pins


def add_prepare(sub) -> None:
    from .archives import MAX_ERRORS
    from .datasets import DATASETS

    p = sub.add_parser(
        "prepare", help="check, extract (and convert) and validate a registered dataset as "
                        "its entry says; write its manifest")
    p.add_argument("dataset", choices=sorted(DATASETS), help="a registered dataset")
    p.add_argument("--source", required=True, type=Path,
                   help="its one zip, a folder holding its files, or an extracted tree (or "
                        "its parent), validated in place and symlinked into --data-root")
    p.add_argument("--data-root", required=True, type=Path,
                   help="folder that will contain the dataset's tree")
    p.add_argument("--manifest", type=Path,
                   help="manifest JSON to write (default <data-root>/<tree>.manifest.json)")
    p.add_argument("--train-count", type=int_at_least(0),
                   help="training pairs expected (default: the entry's official count)")
    p.add_argument("--val-count", type=int_at_least(0),
                   help="validation pairs expected (default: the entry's official count)")
    p.add_argument("--download", action="store_true",
                   help="download the files missing from --source (resumable; checked "
                        "before they are used)")
    add_pin_options(p)
    p.add_argument("--max-errors", type=int_at_least(1), default=MAX_ERRORS,
                   help="problems listed in full before '... and N more'")
    p.add_argument("--workers", type=int_at_least(1),
                   help="processes converting maps, threads validating (default: the cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args) -> int:
    from .datasets import get_dataset
    from .preparation import prepare_dataset

    if args.mirror and not args.download:
        raise InputError("--mirror is only used with --download")
    prepare_dataset(get_dataset(args.dataset), args.source, args.data_root,
                    pinned=not args.unpinned, pins=pins_of(args), download=args.download,
                    mirror=args.mirror, manifest_path=args.manifest,
                    train_count=args.train_count, val_count=args.val_count,
                    max_errors=args.max_errors, workers=args.workers,
                    progress=not args.no_progress, report=print)
    return 0


def add_download(sub) -> None:
    from .datasets import DATASETS

    p = sub.add_parser("download", help="download one file of a registered dataset "
                                        "(resumable), checked before it is put in place")
    p.add_argument("dataset", choices=sorted(DATASETS), help="a registered dataset")
    p.add_argument("--out", required=True, type=Path,
                   help="where the file goes; its name says which of the dataset's files "
                        "it is, unless --file does")
    p.add_argument("--file", help="which of the dataset's files (default: --out's name)")
    add_pin_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_download)


def cmd_download(args) -> int:
    from .datasets import get_dataset
    from .preparation import fetch_source, resolve_pins

    dataset = get_dataset(args.dataset)
    name = args.file or args.out.name
    by_name = {s.name: s for s in dataset.sources}
    if name not in by_name:
        raise InputError(f"{'--file ' + name if args.file else '--out ' + str(args.out)}: not "
                         f"a file of {dataset.name} ({', '.join(by_name)}; --file says which)")
    pin = resolve_pins(dataset, pinned=not args.unpinned, pins=pins_of(args))[name]
    if args.out.exists():
        print(f"{args.out}: already there; not downloaded again")
        return 0
    fetch_source(dataset, by_name[name], args.out, pin, mirror=args.mirror,
                 progress=not args.no_progress, report=print)
    return 0


def add_split(sub) -> None:
    from .splits import TOTAL_TRAIN

    p = sub.add_parser(
        "split", help="write a few-shot training split (one stem per line + .sha256)",
        description="Write the 1/N training subset: sorted stems, shuffled with the seed, "
                    "first total // N kept.  Without a seed, fraction 1 keeps every stem, sorted.")
    p.add_argument("--manifest", required=True, type=Path,
                   help="a prepared dataset's manifest JSON (its train_stems)")
    p.add_argument("--fraction", required=True, type=int_at_least(1), help="N of 1/N")
    seed = p.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=argtypes.seed, help="seed from the config")
    seed.add_argument("--seed-from-log", type=Path, metavar="LOG",
                      help="published training log holding 'Set random seed to <N>'")
    p.add_argument("--out", required=True, type=Path, help="split file to write")
    p.add_argument("--record", type=Path,
                   help="JSON to write: fraction, seed, seed_source, count, sha256")
    p.set_defaults(func=cmd_split)

    q = sub.add_parser("seed-from-log", help="print the seed a published training log used")
    q.add_argument("log", type=Path)
    q.add_argument("--fraction", type=int_at_least(1),
                   help="also check the log's 'Randomly select' count against total // N")
    q.add_argument("--total", type=int_at_least(1), default=TOTAL_TRAIN,
                   help=f"training images the subset was drawn from (default {TOTAL_TRAIN})")
    q.add_argument("--json", action="store_true", help="print all facts as JSON")
    q.set_defaults(func=cmd_seed_from_log)


def cmd_split(args) -> int:
    from .io import write_json
    from .splits import few_shot_subset, load_train_stems, seed_from_log, write_split

    stems = load_train_stems(args.manifest)
    if args.seed_from_log is not None:
        seed = seed_from_log(args.seed_from_log, args.fraction, total=len(stems)).seed
        source = f"log:{args.seed_from_log}"
    else:
        seed, source = args.seed, ("config" if args.seed is not None else "none")
    chosen = few_shot_subset(stems, args.fraction, seed)
    digest = write_split(args.out, chosen)
    if args.record is not None:
        write_json(args.record, {"fraction": args.fraction, "seed": seed,
                                 "seed_source": source, "count": len(chosen),
                                 "total": len(stems), "sha256": digest,
                                 "split": str(args.out)})
    print(f"1/{args.fraction}: {len(chosen)} of {len(stems)} training images "
          f"(seed {seed}, {source}) -> {args.out}")
    return 0


def cmd_seed_from_log(args) -> int:
    from .splits import seed_from_log

    facts = seed_from_log(args.log, args.fraction, args.total)
    print(json.dumps({"log": str(args.log), **facts._asdict()}) if args.json else facts.seed)
    return 0


# ---------------------------------------------------------------- plan


# what `internseg plan` reads when they are there; a file named on the command line must be
PLAN_RESULTS, PLAN_GPU_CHECK = Path("benchmarks/RESULTS.md"), Path("benchmarks/gpu_check.json")


def measurements_to_read(option: str, given: Path | None, default: Path) -> Path:
    if given is None:
        return default
    if given.is_dir():
        raise InputError(f"{option} {given}: is a directory; give the file, e.g. "
                         f"{given / default.name}")
    if not given.is_file():
        raise InputError(f"{option} {given}: no such file (the default is {default})")
    return given


def add_plan(sub) -> None:
    from .engine.traces import DEFAULT_GPU_MEMORY_GB
    from .plan import (ASSUMED_FS_AGGREGATE_WRITE_GBPS, ASSUMED_FS_READ_GBPS,
                       ASSUMED_FS_WRITE_GBPS)
    from .sizing import PAPER_GPUS

    p = sub.add_parser("plan", help="what a preset's runs cost: GPU-hours, memory, disk")
    p.add_argument("--preset", choices=["paper", "demo"], default="paper")
    p.add_argument("--runs", nargs="+", metavar="RUN",
                   help="run ids <dataset>/<trunk>/<experiment>[/seed<N>] (what the workflow "
                        "plans); else --experiments x --trunks x --datasets x --train-seeds")
    p.add_argument("--experiments", nargs="+", help="default: every experiment of the preset")
    p.add_argument("--trunks", nargs="+", help="run each experiment from each of these "
                   "registered trunks (default: the trunk its config names)")
    p.add_argument("--datasets", nargs="+", help="run each experiment on each of these "
                   "registered datasets (default: the dataset its config names)")
    p.add_argument("--train-seeds", nargs="+", type=argtypes.seed,
                   help="one run per training seed (default: one run)")
    p.add_argument("--table15", action="store_true",
                   help="also the InternVL 2.5 report's Table 15 grid: linear probing, head "
                        "tuning and full tuning on every trunk and dataset it has records of")
    p.add_argument("--gpus", type=int_at_least(1), default=PAPER_GPUS,
                   help="GPUs per training run")
    p.add_argument("--results", type=Path, help="measured step times (default "
                   f"{PLAN_RESULTS}, if there)")
    p.add_argument("--gpu-check", type=Path, help="benchmarks/gpu_check.sh's output, preferred "
                   f"to --results (default {PLAN_GPU_CHECK}, if there)")
    p.add_argument("--published-log", nargs="*", default=[], metavar="EXPERIMENT=PATH")
    p.add_argument("--fs-write-gbps", type=argtypes.positive_float,
                   default=ASSUMED_FS_WRITE_GBPS, metavar="GB_S",
                   help="file-system write bandwidth for checkpoints (default: an assumed "
                        f"{ASSUMED_FS_WRITE_GBPS:g} GB/s)")
    p.add_argument("--fs-aggregate-write-gbps", type=argtypes.positive_float,
                   default=ASSUMED_FS_AGGREGATE_WRITE_GBPS, metavar="GB_S",
                   help="what every rank of a sharded run writing its checkpoint shards at "
                        "once reaches in all (default: an assumed "
                        f"{ASSUMED_FS_AGGREGATE_WRITE_GBPS:g} GB/s)")
    p.add_argument("--fs-read-gbps", type=argtypes.positive_float,
                   default=ASSUMED_FS_READ_GBPS, metavar="GB_S",
                   help="file-system read bandwidth per node for the trunk file and resumed "
                        f"checkpoints (default: an assumed {ASSUMED_FS_READ_GBPS:g} GB/s)")
    p.add_argument("--starts", type=int_at_least(1), metavar="N",
                   help="starts per run: 1 + resubmissions (default: as many Slurm jobs as "
                        "its hours need under profiles/slurm's time limits)")
    p.add_argument("--val-interval", type=int_at_least(1), metavar="ITERS",
                   help="what-if: validate every ITERS iterations instead of the configs' "
                        "(the trained weights stay the same)")
    p.add_argument("--checkpoint-interval", type=int_at_least(1), metavar="ITERS",
                   help="what-if: checkpoint every ITERS iterations instead of the configs' "
                        "(the trained weights stay the same)")
    p.add_argument("--traces", type=Path, metavar="DIR",
                   help="rehearsal traces (internseg rehearse), read for the runs whose shape "
                        "has one (default: benchmarks/rehearsal/<preset>)")
    p.add_argument("--gpu-memory-gb", type=argtypes.positive_float,
                   default=DEFAULT_GPU_MEMORY_GB, metavar="GB",
                   help="refuse a run whose traced peak per GPU exceeds this (default "
                        f"{DEFAULT_GPU_MEMORY_GB:g}, an A100/H100-80GB)")
    p.add_argument("--json", action="store_true",
                   help="machine-readable rows, totals, assumptions")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.set_defaults(func=cmd_plan)


def selected_runs(args) -> dict:
    """The runs `plan` and `rehearse` are asked about: --runs by id, else the preset's
    experiments (on --trunks and --datasets, with --train-seeds, where the command takes
    them), and with --table15 the grid."""
    from .registry import experiments, parse_run_id, plan_runs, table15_runs

    registered = experiments(args.preset)
    if args.runs:
        runs = {r: parse_run_id(r) for r in args.runs}
    else:
        runs = plan_runs(args.experiments or list(registered), registered, args.trunks,
                         args.datasets, args.train_seeds)
    if args.table15:
        runs |= table15_runs(registered, train_seeds=args.train_seeds)
    return runs


def cmd_plan(args) -> int:
    from dataclasses import asdict

    from .io import write_text
    from .engine.traces import traces_dir
    from .plan import Bandwidth, assumptions, plan, to_markdown, totals

    runs = selected_runs(args)
    logs = parse_pairs(args.published_log, "--published-log")
    bandwidth = Bandwidth(args.fs_write_gbps, args.fs_read_gbps, args.starts,
                          args.fs_aggregate_write_gbps)
    # a file named but not there was ignored, and the plan made from assumptions
    results = measurements_to_read("--results", args.results, PLAN_RESULTS)
    gpu_check = measurements_to_read("--gpu-check", args.gpu_check, PLAN_GPU_CHECK)
    costs = plan(runs.values(), args.preset, args.gpus, results_md=results,
                 gpu_check=gpu_check, published_logs=logs, bandwidth=bandwidth,
                 val_interval=args.val_interval, checkpoint_interval=args.checkpoint_interval,
                 traces=args.traces or traces_dir(args.preset), gpu_memory_gb=args.gpu_memory_gb)
    markdown = to_markdown(costs, bandwidth)
    if args.out:
        write_text(args.out, markdown)
    if args.json:
        print(json.dumps(dict(runs=[asdict(c) for c in costs], totals=totals(costs),
                              assumptions=assumptions(bandwidth)), indent=2))
    else:
        print(markdown, end="")
    return 0


# ---------------------------------------------------------------- rehearse


def add_rehearse(sub) -> None:
    p = sub.add_parser("rehearse", help="each run at its true size on fake tensors: peak "
                       "memory per GPU by kind, FLOPs, host memory (no GPU needed)")
    p.add_argument("--preset", choices=["paper", "demo"], default="demo")
    p.add_argument("--runs", nargs="+", metavar="RUN",
                   help="run ids <dataset>/<trunk>/<experiment>[/seed<N>]; else every "
                        "experiment of the preset on its own trunk and dataset")
    p.add_argument("--experiments", nargs="+", help="default: every experiment of the preset")
    p.add_argument("--table15", action="store_true",
                   help="also the Table 15 grid (every trunk, dataset and regime it has)")
    p.add_argument("--gpus", type=int_at_least(1),
                   help="GPUs (fake ranks) per run (default: 8 for paper, 1 for demo)")
    p.add_argument("--traces", type=Path, help="where traces are stored and read, one per "
                   "shape (default: benchmarks/rehearsal/<preset>)")
    p.add_argument("--force", action="store_true", help="trace again where a trace is stored")
    p.add_argument("--cfg-options", nargs="+", action=_dict_action(), default={},
                   help="as for train (the traces of a changed run are not stored)")
    p.add_argument("--json", action="store_true", help="every run's figures as JSON")
    p.set_defaults(func=cmd_rehearse, trunks=None, datasets=None, train_seeds=None)


def cmd_rehearse(args) -> int:
    from .engine.rehearse import rehearse_runs
    from .engine.traces import default_gpus, summary, traces_dir

    runs = selected_runs(args)
    gpus = args.gpus or default_gpus(args.preset)
    directory = args.traces or traces_dir(args.preset)

    def progress(run_id, trace):
        log.info("rehearsed %s: peak %.2f GB per GPU (%s), %.3g FLOPs per iteration",
                 run_id, trace.peak_bytes / 1e9, trace.peak_phase, trace.flops_per_iteration)

    traces = rehearse_runs(args.preset, runs.values(), gpus, directory, force=args.force,
                           cfg_options=args.cfg_options, progress=progress)
    rows = [summary(run_id, trace) for run_id, trace in traces.items()]
    if args.json:
        print(json.dumps(dict(preset=args.preset, gpus=gpus, traces=str(directory), runs=rows),
                         indent=2))
    else:
        print("| run | GPUs | peak GB/GPU | biggest kind | train / validation GB | "
              "TFLOP/iteration | TFLOP/val image | host GB/rank |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {r['gpus']} | {r['peak_gb']} | {r['biggest_kind']} | "
                  f"{r['train_peak_gb']} / {r['validation_peak_gb']} | "
                  f"{r['flops_per_iteration'] / 1e12:.3g} | "
                  f"{r['flops_per_val_image'] / 1e12:.3g} | {r['host_gb_per_rank']} |")
    return 0


# ---------------------------------------------------------------- demo stand-ins


def add_make_demo(sub) -> None:
    p = sub.add_parser("make-demo", help="write the synthetic ADE20K zip, the synthetic "
                       "COCO-Stuff zips and/or a synthetic registered trunk (the demo's "
                       "local 'Hub')")
    p.add_argument("--zip", help="ADEChallengeData2016.zip to write")
    p.add_argument("--coco-stuff", metavar="DIR", help="folder to write train2017.zip, "
                   "val2017.zip and stuffthingmaps_trainval2017.zip into")
    p.add_argument("--checkpoint", help="trunk checkpoint to write (the trunk's file name)")
    p.add_argument("--trunk", default="intern_vit_tiny_demo",
                   help="registered synthetic trunk to write (internseg.trunks)")
    p.add_argument("--train-count", type=int_at_least(1), default=96)
    p.add_argument("--val-count", type=int_at_least(1), default=16)
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.set_defaults(func=cmd_make_demo)


def cmd_make_demo(args) -> int:
    from .demo import write_demo_coco_stuff, write_demo_zip, write_tiny_checkpoint

    if not (args.zip or args.coco_stuff or args.checkpoint):
        raise InputError("make-demo: nothing to write; give --zip, --coco-stuff and/or "
                         "--checkpoint")
    if args.zip:
        write_demo_zip(args.zip, args.train_count, args.val_count, args.seed)
        print(f"demo data -> {args.zip}")
    if args.coco_stuff:
        write_demo_coco_stuff(args.coco_stuff, args.train_count, args.val_count, args.seed)
        print(f"demo COCO-Stuff zips -> {args.coco_stuff}")
    if args.checkpoint:
        write_tiny_checkpoint(args.checkpoint, args.seed, args.trunk)
        print(f"trunk {args.trunk} -> {args.checkpoint}")
    return 0


def add_make_demo_released(sub) -> None:
    p = sub.add_parser("make-demo-released", help="write a demo stand-in for an experiment's "
                       "released checkpoint, in the original's key layout")
    p.add_argument("experiment", help="demo experiment, e.g. head_tuning")
    p.add_argument("--trunk", help="the registered trunk it is on (default: the config's)")
    p.add_argument("--dataset", help="the registered dataset it is for (default: the config's)")
    p.add_argument("--pretrained", required=True, help="the tiny trunk written by make-demo")
    p.add_argument("--out", required=True, help=".pth to write")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.set_defaults(func=cmd_make_demo_released)


def cmd_make_demo_released(args) -> int:
    from .demo import write_released_demo

    write_released_demo(args.out, args.experiment, args.pretrained, args.seed,
                        trunk=args.trunk, dataset=args.dataset)
    print(f"released stand-in for {args.experiment} -> {args.out}")
    return 0


# ---------------------------------------------------------------- results


def add_aggregate(sub) -> None:
    p = sub.add_parser("aggregate", help="the tables (ours beside the published numbers) and "
                       "the plots")
    p.add_argument("runs", nargs="+",
                   help="run folders <runs-root>/<dataset>/<trunk>/<experiment>[/seed<N>]")
    p.add_argument("--runs-root", default="results/runs",
                   help="the folder run ids are relative to (default results/runs)")
    p.add_argument("--published-log", nargs="*", default=[], metavar="RUN=PATH",
                   help="the original's training log, for its final and best validation mIoU")
    p.add_argument("--released-metrics", nargs="*", default=[], metavar="RUN=PATH",
                   help="metrics.json of the experiment's released checkpoint (released_mIoU)")
    p.add_argument("--tolerance", type=argtypes.positive_float, default=None,
                   help="mIoU points from the paper's number a row may be and still be "
                        "'within' (default: twice the row's seed spread, or 1.0 for one run)")
    p.add_argument("--csv", help="every run, one row each")
    p.add_argument("--summary-csv",
                   help="one row per dataset, trunk and experiment: mean, std, n, verdict")
    p.add_argument("--markdown", help="the summary and every run, per dataset and trunk")
    p.add_argument("--table15-csv", help="the Table 15 view, one row per trunk and column")
    p.add_argument("--table15-markdown", help="the Table 15 view in the report's layout")
    p.add_argument("--provenance-csv", help="per run: git commit, versions, run identity, "
                   "input sha256s, hardware (from each run's provenance.json)")
    p.add_argument("--fraction-plot")
    p.add_argument("--trunk-plot", help="trunk x regime bars, one panel per dataset")
    p.add_argument("--table15-plot", help="Table 15, ours beside the report's per cell: both "
                   "datasets and the averages, and each cell's gap")
    p.add_argument("--curves-plot")
    p.set_defaults(func=cmd_aggregate)


def parse_pairs(pairs: list[str], option: str, convert=Path, what: str = "PATH",
                key: str = "EXPERIMENT") -> dict:
    """KEY=VALUE pairs; ``convert`` turns VALUE into what the option takes."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not (sep and value):
                raise ValueError(pair)
            out[name] = convert(value)
        except ValueError:
            raise InputError(f"{option} expects {key}={what}, got {pair!r}") from None
    return out


def cmd_aggregate(args) -> int:
    from .io import write_text
    from .results.plots import (plot_miou_vs_fraction, plot_table15, plot_training_curves,
                                plot_trunk_regimes)
    from .results.table import (build_table, load_record, provenance_table, report_markdown,
                                summarize)
    from .results.table15 import table15, table15_markdown

    outputs = ("csv", "summary_csv", "markdown", "table15_csv", "table15_markdown",
               "provenance_csv", "fraction_plot", "trunk_plot", "table15_plot", "curves_plot")
    if not any(getattr(args, name) for name in outputs):
        raise InputError("aggregate: nothing to write; give at least one output option")
    logs = parse_pairs(args.published_log, "--published-log", key="RUN")
    released = parse_pairs(args.released_metrics, "--released-metrics", key="RUN")
    root = Path(args.runs_root).resolve()
    records, scalars = [], {}
    for folder in map(Path, args.runs):
        try:
            run = folder.resolve().relative_to(root).as_posix()
        except ValueError:
            raise InputError(f"{folder}: not inside --runs-root {args.runs_root}") from None
        run_scalars = folder / "scalars.jsonl"
        if run_scalars.is_file():
            scalars[run] = run_scalars
        records.append(load_record(run, config_file=folder / "config.py",
                                   metrics_file=folder / "metrics.json",
                                   split_record=folder / "split.json",
                                   provenance_file=folder / "provenance.json",
                                   scalars_file=scalars.get(run),
                                   published_log=logs.get(run),
                                   released_metrics=released.get(run)))
    table = build_table(records)
    summary = summarize(table, args.tolerance)
    markdown = report_markdown(table, summary)
    for out, text in ((args.csv, lambda: table.to_csv(index=False)),
                      (args.summary_csv, lambda: summary.to_csv(index=False)),
                      (args.markdown, lambda: markdown),
                      (args.table15_csv,
                       lambda: table15(summary, args.tolerance).to_csv(index=False)),
                      (args.table15_markdown,
                       lambda: table15_markdown(table15(summary, args.tolerance))),
                      (args.provenance_csv,
                       lambda: provenance_table(records).to_csv(index=False))):
        if out:
            write_text(out, text())
    if args.fraction_plot:
        plot_miou_vs_fraction(summary, args.fraction_plot)
    if args.trunk_plot:
        plot_trunk_regimes(summary, args.trunk_plot)
    if args.table15_plot:
        plot_table15(table15(summary, args.tolerance), args.table15_plot)
    if args.curves_plot:
        plot_training_curves(scalars, args.curves_plot,
                             {r.run: r.published for r in records if r.published})
    print(table15_markdown(table15(summary, args.tolerance)) if args.table15_markdown
          else markdown)
    return 0


# ---------------------------------------------------------------- disk


def add_clean(sub) -> None:
    p = sub.add_parser(
        "clean", help="list (or remove) superseded work dirs, used again only if their "
        "run's inputs come back, and temporary files of killed writers; with their sizes",
        description="A work dir whose run changed is moved aside to "
        "<run>.superseded-<identity>-<time> (beside its target, for a work dir that is a "
        "link); `internseg train` brings it back when the run's inputs are changed back, and "
        "keeps the newest (--keep-superseded, default 1). This lists every one under "
        "--work-root with its size and age, and the temporary files of writers that are no "
        "longer running; --remove deletes them (a superseded entry that is a link is "
        "unlinked, its target left). A run being trained is skipped.")
    p.add_argument("--work-root", type=Path, default=Path("work"),
                   help="where the work dirs are (default: work)")
    p.add_argument("--remove", action="store_true", help="delete what is listed")
    p.add_argument("--keep", type=int_at_least(0), default=0, metavar="N",
                   help="leave the newest N superseded work dirs of each run (default 0)")
    p.add_argument("--older-than", type=argtypes.positive_float, metavar="DAYS",
                   help="only superseded work dirs older than DAYS")
    p.set_defaults(func=cmd_clean)


def cmd_clean(args) -> int:
    from .engine.disk import clean

    if not args.work_root.is_dir():
        raise InputError(f"--work-root {args.work_root}: no such folder")
    clean(args.work_root, remove=args.remove, keep=args.keep, older_than=args.older_than)
    return 0


# ---------------------------------------------------------------- the command


SUBCOMMANDS = (add_train, add_test, add_inspect, add_records, add_fetch, add_prepare,
               add_download, add_split, add_plan, add_rehearse,
               add_make_demo,
               add_make_demo_released, add_aggregate, add_clean)


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line, like every other bad input (the usage is ``-h``)."""

    def error(self, message):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (usage: {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    # the docstring's first paragraph, whole: its first line alone stopped mid-sentence
    summary = " ".join(__doc__.split("\n\n")[0].split())
    parser = OneLineParser(prog="internseg", description=summary)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"internseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def expected_os_error(err: OSError) -> str | None:
    """One line for an OSError that names what the user gave or where we write: a missing,
    misplaced or unwritable path, a full disk. None: keep the traceback."""
    path = err.filename
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError,
                        PermissionError)) and path:
        return f"{path}: {err.strerror}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{path or 'a file being written'}: no space left on the device ({err.strerror})"
    return None


def _log_file_error(handler: logging.FileHandler, record: logging.LogRecord) -> None:
    """logging prints a traceback for every record a full disk keeps out of a log file
    (mmengine's, in a work dir) and goes on: stop instead, naming the file."""
    from .io import full_disk_cause

    full = full_disk_cause(sys.exc_info()[1])
    if full is None:
        logging.Handler.handleError(handler, record)
        return
    raise OSError(full.errno, full.strerror, handler.baseFilename) from None


# 128 + SIGPIPE: what the shell reports for a tool that the signal ended
EXIT_READER_CLOSED = 141


def stdout_is_closed() -> bool:
    """Whether our stdout's reader went away (a broken pipe elsewhere, a socket, is a fault):
    the write end of a pipe without a reader polls as an error."""
    import select

    poller = select.poll()
    try:
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError):  # not a file (a test's capture): not ours to judge
        return False
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.FileHandler.handleError = _log_file_error
    try:
        code = args.func(args)
        # a reader that closed early (`| head -1`) fails the flush at exit, outside this handler
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        if not stdout_is_closed():
            raise
        # the reader has what it wanted: stop quietly, as a Unix tool SIGPIPE ends does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_CLOSED
    except InputError as err:
        # expected problems: one line naming the culprit; anything else keeps its traceback
        print(f"internseg {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        line = expected_os_error(err)
        if line is None:
            raise
        print(f"internseg {args.command}: error: {line}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
