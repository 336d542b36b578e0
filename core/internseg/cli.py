"""The `internseg` command that every workflow rule calls.

Heavy imports (torch, mmseg) happen inside the subcommands so that light steps start fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import ade20k, argtypes, hub, plan, splits
from .errors import EXIT_INPUT, InputError

log = logging.getLogger("internseg")


def _dict_action():
    from mmengine.config import DictAction

    return DictAction


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train one experiment (mmengine Runner)")
    p.add_argument("config", help="config file, or <preset>/<experiment>, e.g. demo/head_tuning")
    p.add_argument("--work-dir", help="where checkpoints and logs go "
                   "(default: the config's work_dir, else work_dirs/<config name>)")
    p.add_argument("--load-from", help="initialise from this checkpoint (no resume)")
    p.add_argument("--resume-from", help="resume optimizer, schedule and iteration from it")
    p.add_argument("--auto-resume", action="store_true",
                   help="resume from the latest checkpoint in the work dir, if any")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--seed", type=argtypes.seed)
    p.add_argument("--seed-record", help="split.json from `internseg split`: train with the "
                   "seed its subset was drawn with, as the original runs did")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--cfg-options", nargs="+", action=_dict_action(), default={},
                   help="override config keys, e.g. train_cfg.max_iters=100")
    p.add_argument("--data-root", help="the ADEChallengeData2016 folder")
    p.add_argument("--split", help="file of training image stems to train on")
    p.add_argument("--pretrained", help="intern_vit_6b_224px.pth-format trunk checkpoint")
    p.add_argument("--final-checkpoint", help="write the trained weights here at the end")
    p.add_argument("--scalars-out", help="write the run's logged scalars (JSON lines) here")
    p.add_argument("--config-out", help="write the config the run used here")
    p.add_argument("--provenance-out", help="write what made the weights here (JSON: git "
                   "commit, versions, run identity and its input sha256s, hardware)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--gpus", type=int, default=0, help="start one process per GPU (srun "
                   "inside a Slurm allocation, torchrun elsewhere); 0 or 1: this process")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .engine.stops import listening_for_stops

    with listening_for_stops():
        return train_in_this_process(args)


def train_in_this_process(args) -> int:
    from .config import load_config
    from .engine.launch import launch_command
    from .engine.train import (TrainOptions, configure_threads, require_cuda_for_ranks,
                               run_training)

    if args.gpus > 1 and args.launcher == "none":
        # before the ranks start: each would fail on its own, with a traceback
        require_cuda_for_ranks(load_config(args.config, args.cfg_options), args.config)
    command = launch_command(strip_option(args.argv, "--gpus"), args.gpus, args.launcher,
                             os.environ)
    if command:
        log.info("launching %d ranks: %s", args.gpus, " ".join(command))
        os.execvp(command[0], command)

    configure_threads(args.threads)
    if args.seed is None and args.seed_record:
        args.seed = read_seed_record(args.seed_record)
    fields = TrainOptions.__dataclass_fields__
    run_training(TrainOptions(**{k: v for k, v in vars(args).items() if k in fields}))
    return 0


def read_seed_record(path: str) -> int | None:
    try:
        seed = json.loads(Path(path).read_text()).get("seed")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"--seed-record {path}: not a readable split record ({err})") from None
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
    p.add_argument("config")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="metrics.json to write")
    p.add_argument("--data-root")
    p.add_argument("--pretrained", help="trunk checkpoint, for head-only checkpoints")
    p.add_argument("--work-dir")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--cfg-options", nargs="+", action=_dict_action(), default={})
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_test)


def cmd_test(args) -> int:
    from .engine.evaluate import run_test
    from .engine.train import configure_threads
    from .io import check_writable

    configure_threads(args.threads)
    check_writable(Path(args.out).parent, "--out folder")
    result = run_test(args.config, args.checkpoint, args.out, data_root=args.data_root,
                      pretrained=args.pretrained, work_dir=args.work_dir,
                      launcher=args.launcher, cfg_options=args.cfg_options)
    print(f"mIoU {result['mIoU']}  mAcc {result['mAcc']}  aAcc {result['aAcc']}  -> {args.out}")
    return 0


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="parameter counts and optimizer groups (no memory used)")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    from .config import load_config
    from .engine.inspect import describe

    info = dict(config=args.config, **describe(load_config(args.config)))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        groups = info["param_groups"]
        print(f"{args.config}: trainable / total {info['summary']} "
              f"({info['summary_without_auxiliary_head']} without the auxiliary head) "
              f"(backbone {info['backbone_params']:,}); {groups['count']} optimizer groups, "
              f"lr scale {groups['lr_scale_min']:.3g}..{groups['lr_scale_max']:.3g}")
    return 0


def add_make_demo(sub) -> None:
    p = sub.add_parser("make-demo", help="write the synthetic ADE20K zip and/or a synthetic "
                       "registered trunk (the demo's local 'Hub')")
    p.add_argument("--zip", help="ADEChallengeData2016.zip to write")
    p.add_argument("--checkpoint", help="trunk checkpoint to write (the trunk's file name)")
    p.add_argument("--trunk", default="intern_vit_tiny_demo",
                   help="registered synthetic trunk to write (internseg.trunks)")
    p.add_argument("--train-count", type=int, default=96)
    p.add_argument("--val-count", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_demo)


def cmd_make_demo(args) -> int:
    from .demo import write_demo_zip, write_tiny_checkpoint

    if not (args.zip or args.checkpoint):
        raise InputError("make-demo: nothing to write; give --zip and/or --checkpoint")
    if args.zip:
        write_demo_zip(args.zip, args.train_count, args.val_count, args.seed)
        print(f"demo data -> {args.zip}")
    if args.checkpoint:
        write_tiny_checkpoint(args.checkpoint, args.seed, args.trunk)
        print(f"trunk {args.trunk} -> {args.checkpoint}")
    return 0


def add_make_demo_released(sub) -> None:
    p = sub.add_parser("make-demo-released", help="write a demo stand-in for an experiment's "
                       "released checkpoint, in the original's key layout")
    p.add_argument("experiment", help="demo experiment, e.g. head_tuning")
    p.add_argument("--pretrained", required=True, help="the tiny trunk written by make-demo")
    p.add_argument("--out", required=True, help=".pth to write")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_demo_released)


def cmd_make_demo_released(args) -> int:
    from .demo import write_released_demo

    write_released_demo(args.out, args.experiment, args.pretrained, args.seed)
    print(f"released stand-in for {args.experiment} -> {args.out}")
    return 0


def add_aggregate(sub) -> None:
    p = sub.add_parser("aggregate", help="one table (ours beside the paper) and the plots")
    p.add_argument("runs", nargs="+",
                   help="run folders <runs-root>/<trunk>/<experiment>[/seed<N>]")
    p.add_argument("--runs-root", default="results/runs",
                   help="the folder run ids are relative to (default results/runs)")
    p.add_argument("--published-log", nargs="*", default=[], metavar="RUN=PATH",
                   help="the original's training log, for its final and best validation mIoU")
    p.add_argument("--released-metrics", nargs="*", default=[], metavar="RUN=PATH",
                   help="metrics.json of the experiment's released checkpoint (released_mIoU)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="mIoU points from the paper's number a row may be and still be "
                        "'within' (default: twice the row's seed spread, or 1.0 for one run)")
    p.add_argument("--csv", required=True, help="every run, one row each")
    p.add_argument("--summary-csv", required=True,
                   help="one row per trunk and experiment: mean, std, n, verdict")
    p.add_argument("--markdown", required=True)
    p.add_argument("--provenance-csv", help="per run: git commit, versions, run identity, "
                   "input sha256s, hardware (from each run's provenance.json)")
    p.add_argument("--fraction-plot", required=True)
    p.add_argument("--trunk-plot", required=True, help="trunk x regime bars")
    p.add_argument("--curves-plot", required=True)
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
    from .results.plots import plot_miou_vs_fraction, plot_training_curves, plot_trunk_regimes
    from .results.table import (build_table, load_record, provenance_table, report_markdown,
                                summarize)

    logs = parse_pairs(args.published_log, "--published-log", key="RUN")
    released = parse_pairs(args.released_metrics, "--released-metrics", key="RUN")
    root = Path(args.runs_root).resolve()
    records, scalars = [], {}
    for folder in map(Path, args.runs):
        try:
            run = folder.resolve().relative_to(root).as_posix()
        except ValueError:
            raise InputError(f"{folder}: not inside --runs-root {args.runs_root}") from None
        run_scalars, provenance = folder / "scalars.jsonl", folder / "provenance.json"
        if run_scalars.is_file():
            scalars[run] = run_scalars
        records.append(load_record(run, config_file=folder / "config.py",
                                   metrics_file=folder / "metrics.json",
                                   split_record=folder / "split.json",
                                   scalars_file=scalars.get(run),
                                   published_log=logs.get(run),
                                   released_metrics=released.get(run),
                                   provenance_file=provenance if provenance.is_file() else None))
    table = build_table(records)
    summary = summarize(table, args.tolerance)
    markdown = report_markdown(table, summary)
    write_text(args.csv, table.to_csv(index=False))
    write_text(args.summary_csv, summary.to_csv(index=False))
    write_text(args.markdown, markdown)
    if args.provenance_csv:
        write_text(args.provenance_csv, provenance_table(records).to_csv(index=False))
    plot_miou_vs_fraction(summary, args.fraction_plot)
    plot_trunk_regimes(summary, args.trunk_plot)
    plot_training_curves(scalars, args.curves_plot,
                         {r.run: r.published for r in records if r.published})
    print(markdown)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="internseg", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_train, add_test, add_inspect, hub.add_parser, ade20k.add_parser,
                splits.add_parser, plan.add_parser, add_make_demo, add_make_demo_released,
                add_aggregate):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except InputError as err:
        # expected problems: one line naming the culprit; anything else keeps its traceback
        print(f"internseg {args.command}: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except PermissionError as err:
        # a folder we were told to write to (work, output, cache) is read-only
        if not err.filename:
            raise
        print(f"internseg {args.command}: error: {err.filename}: not writable "
              f"({err.strerror})", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
