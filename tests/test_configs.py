"""The config files: each runs as written (mmengine loads it, mmseg builds it), matches the
recorded facts of the original, and a demo config differs from its paper config only where
the CPU demo must."""

import pytest
import yaml

from conftest import FACTS

from internseg.config import (CONFIG_ROOT, backbone_architecture, config_path, leaves,
                              load_config)
from internseg.errors import InputError
from internseg.registry import experiments

PAPER = sorted(experiments("paper"))
# the eight rows of the paper's table (the adapter row has its own facts: test_adapter.py)
RECORDED = sorted(set(yaml.safe_load(FACTS.read_text())["experiments"]) - {"common"})
CONFIG_FILES = sorted(p for p in CONFIG_ROOT.glob("*/*.py") if p.parent.name != "_base_")


def test_every_paper_experiment_is_a_demo_experiment_and_every_demo_file_a_paper_row():
    assert PAPER == sorted(experiments("demo"))
    # a demo file states what its row's demo does otherwise; without its paper row it is
    # nothing the demo runs
    assert {p.stem for p in (CONFIG_ROOT / "demo").glob("*.py")} <= set(PAPER)


def test_every_demo_run_keeps_the_identity_it_had_as_a_file():
    """The demo configs were eight files; derived, each run (on each demo trunk and dataset)
    trains what it trained, so a finished demo is not retrained (the digests were recorded
    from the files)."""
    import hashlib
    import json

    from internseg.engine.identity import training_config

    recorded = json.loads((FACTS.parent / "demo_config_sha256.json").read_text())
    assert {key.split("/")[0] for key in recorded} == set(PAPER)
    for key, digest in recorded.items():
        name, trunk, dataset = (None if part == "-" else part for part in key.split("/"))
        cfg = load_config(f"demo/{name}", trunk=trunk, dataset=dataset, import_modules=False)
        text = json.dumps(training_config(cfg), sort_keys=True, default=str)
        assert hashlib.sha256(text.encode()).hexdigest() == digest, key


def test_a_new_row_needs_no_demo_file(tmp_path, monkeypatch):
    """A paper row added alone runs in the demo: moved to the tiny trunk, on the one schedule,
    its iterations scaled from its own (20000 of the paper's 80000: 40 of 160)."""
    import shutil

    from internseg import config

    root = tmp_path / "configs"
    shutil.copytree(CONFIG_ROOT, root)
    (root / "paper" / "head_tuning_1of4.py").write_text(
        '_base_ = ["./head_tuning.py"]\ntrain_fraction = 4\ntrain_cfg = dict(max_iters=20000)\n'
        'param_scheduler = [\n'
        '    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=401),\n'
        '    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=20001),\n'
        ']\n')
    monkeypatch.setattr(config, "CONFIG_ROOT", root)
    monkeypatch.setattr(config, "DEMO_DIR", root / "demo")
    monkeypatch.setattr(config, "DEMO_SCHEDULE", root / "_base_" / "demo.py")
    assert "head_tuning_1of4" in [p.stem for p in config.config_files("demo")]
    cfg = load_config("demo/head_tuning_1of4", import_modules=False)
    head = load_config("demo/head_tuning", import_modules=False)
    assert cfg.model.backbone.trunk == "intern_vit_tiny_demo" and cfg.train_fraction == 4
    assert cfg.train_cfg.max_iters == 40 and cfg.train_cfg.val_interval == 20
    assert [s.end for s in cfg.param_scheduler] == [2, 41]
    assert cfg.model == head.model and cfg.train_dataloader == head.train_dataloader
    assert cfg.optim_wrapper.optimizer.lr == 2e-3 and cfg.total_batch_size == 2
    # the demo schedule is one of its sources: an edit to it reruns the row
    names = [p.relative_to(root).as_posix() for p in config.config_sources(
        "demo/head_tuning_1of4")]
    assert names[:3] == ["paper/head_tuning_1of4.py", "_base_/demo.py", "paper/head_tuning.py"]
    # a demo file for other demo settings: its schedule values and what it states win
    (root / "demo" / "head_tuning_1of4.py").write_text(
        '_base_ = ["../paper/head_tuning_1of4.py"]\ndemo_schedule = dict(crop=112)\n'
        'optim_wrapper = dict(optimizer=dict(lr=1e-3))\n')
    own = load_config("demo/head_tuning_1of4", import_modules=False)
    assert own.model.data_preprocessor.size == (112, 112) and own.model.backbone.img_size == 112
    assert own.optim_wrapper.optimizer.lr == 1e-3 and "demo_schedule" not in own


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_a_config_file_runs_as_written(path):
    """mmengine's own loader, our plugin through the file's custom_imports, mmseg's registry:
    what mmseg's tools would do with the file, with nothing of ours rewriting it first."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(path))
    assert isinstance(cfg.train_cfg.max_iters, int)
    assert all(isinstance(s.end, int) and isinstance(s.begin, int) for s in cfg.param_scheduler)
    # the poly ends with the loop: the last iteration trains at the lowest lr
    assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters + 1
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device("meta"):
        model = MODELS.build(cfg.model)
    arch = backbone_architecture(cfg.model.backbone)
    assert model.backbone.embed_dim == arch["embed_dim"] and model.backbone.depth == arch["depth"]
    heads = [cfg.model.decode_head] + ([cfg.model.auxiliary_head]
                                       if cfg.model.get("auxiliary_head") else [])
    for head in heads:
        levels = head.in_channels if isinstance(head.in_channels, list) else [head.in_channels]
        assert set(levels) == {arch["embed_dim"]}
    resolved = load_config(path).to_dict()
    if path.parent.name != "demo":
        # what load_config gives is the file, nothing added or changed
        assert resolved == cfg.to_dict()
        return
    # a demo file is its paper row with what the row's demo does otherwise: what it states
    # beside the paper (not its own demo schedule) is what the demo runs
    paper = leaves(Config.fromfile(str(CONFIG_ROOT / "paper" / path.name)).to_dict())
    stated = {key: value for key, value in leaves(cfg.to_dict()).items()
              if paper.get(key, "absent") != value and not key.startswith("demo_schedule")}
    assert stated and {key: leaves(resolved).get(key) for key in stated} == stated


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_config_holds_a_published_number(path):
    """Published numbers are records (configs/metafile.yaml): nothing a config inherits can
    carry one."""
    text = " ".join(map(str, _flatten(load_config(path, import_modules=False).to_dict())))
    for word in ("miou", "paper", "published", "released"):
        assert word not in text.lower()


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from _flatten(value, f"{prefix}{key}.")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _flatten(value, f"{prefix}{i}.")


@pytest.mark.parametrize("name", RECORDED)
def test_paper_config_matches_reference(name, reference):
    ref = reference["experiments"][name]
    common = reference["experiments"]["common"]
    cfg = load_config(config_path("paper", name))
    backbone = cfg.model.backbone
    assert backbone.out_indices == ref["out_indices"]
    assert backbone.drop_path_rate == ref["drop_path"]
    assert backbone.freeze_trunk is (ref["trunk"] == "frozen")
    # sharded (FSDP) exactly when the trunk trains; frozen trunks stay on plain DDP
    sharded = cfg.get("strategy", {}).get("type") == "ShardedTrunkStrategy"
    assert sharded is (ref["trunk"] == "trained")
    arch = backbone_architecture(backbone)
    facts = reference["backbone"]
    assert (arch["patch_size"], arch["embed_dim"], arch["depth"], arch["num_heads"]) == (
        facts["patch_size"], facts["embed_dim"], facts["depth"], facts["num_heads"])
    assert backbone.img_size == common["crop"] == facts["img_size"]
    # Precision as the code that produced the published numbers: bf16 trunk; fp32 master
    # weights where it trained the trunk under DeepSpeed ZeRO-1 bf16 (few-shot, full tuning)
    assert backbone.trunk_dtype == "bfloat16"
    if ref["trunk"] == "trained":
        regime = "fewshot" if name.startswith("fewshot") else name
        assert backbone.master_weights is ("fp32 masters" in reference["provenance"][regime])
    assert cfg.optim_wrapper.optimizer.weight_decay == ref["weight_decay"]
    assert cfg.optim_wrapper.optimizer.lr == reference["optimizer"]["lr"]
    assert tuple(cfg.optim_wrapper.optimizer.betas) == tuple(reference["optimizer"]["betas"])
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == ref["layer_decay"]
    assert cfg.train_cfg.max_iters == ref["iters"]
    warm, poly = cfg.param_scheduler
    assert (warm.type, warm.end, warm.start_factor) == ("LinearLR", ref["warmup"] + 1, 1e-6)
    assert (poly.type, poly.end, poly.power, poly.eta_min) == (
        "PolyLR", ref["iters"] + 1, 1.0, 0.0)
    assert cfg.train_dataloader.batch_size * 8 == common["batch_size"]
    assert cfg.train_cfg.val_interval == common["eval_interval"]
    ckpt = cfg.default_hooks.checkpoint
    assert (ckpt.interval, ckpt.max_keep_ckpts) == (common["checkpoint_interval"],
                                                    common["keep_checkpoints"])
    assert cfg.train_fraction == ref["fraction"]
    head = cfg.model.decode_head
    if ref["head"] == "linear":
        assert head.type == "LinearHead" and head.in_channels == 3200
        assert "auxiliary_head" not in cfg.model and "neck" not in cfg.model
    else:
        assert head.type == "UPerHead" and head.channels == 1536
        assert tuple(head.pool_scales) == (1, 2, 3, 6)
        aux = cfg.model.auxiliary_head
        assert aux.in_index == ref["aux_in_index"]
        assert aux.loss_decode.loss_weight == 0.4
        assert cfg.model.neck.type == "FeatureResampler"
        assert cfg.model.neck.compute_dtype == "bfloat16"
    assert head.loss_decode.avg_non_ignore is False
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(504, 504), stride=(322, 322))
    # the test-time resize each of the original's configs used (facts: test_per_config)
    resize = [s.type for s in cfg.test_dataloader.dataset.pipeline if "Resize" in s.type][0]
    capped = name in ("fewshot_1of16", "fewshot_1of8", "fewshot_1of4", "fewshot_1of2")
    assert resize == ("Resize" if capped else "ShortSideResize")
    assert "SETR_Resize" in reference["data_pipeline"]["test_per_config"]


def test_pipelines_match_reference():
    cfg = load_config("paper/fewshot_1of16")
    steps = {s.type: s for s in cfg.train_dataloader.dataset.pipeline}
    assert steps["RandomResize"].scale == (2016, 504)
    assert steps["RandomResize"].ratio_range == (0.5, 2.0)
    assert steps["RandomCrop"].crop_size == (504, 504)
    assert steps["RandomCrop"].cat_max_ratio == 0.75
    assert steps["RandomFlip"].prob == 0.5
    assert "PhotoMetricDistortion" in steps
    test_steps = {s.type: s for s in cfg.test_dataloader.dataset.pipeline}
    assert test_steps["Resize"].scale == (2016, 504) and test_steps["Resize"].keep_ratio
    assert test_steps["ResizeToMultiple"].size_divisor == 14
    pre = cfg.model.data_preprocessor
    assert pre.mean == [123.675, 116.28, 103.53] and pre.std == [58.395, 57.12, 57.375]
    assert pre.bgr_to_rgb and pre.pad_val == 0 and pre.seg_pad_val == 255
    assert cfg.train_dataloader.dataset.reduce_zero_label is True


# What a demo config may change in its paper config: the tiny trunk (its blocks and widths),
# the crop and what scales with it, the batch, lr and schedule, the loaders' workers, and for
# the adapter its size and its CPU optimizer (no AMP on CPU). Everything else is the paper's.
DEMO_CHANGES = (
    "model.data_preprocessor.size", "model.backbone.trunk", "model.backbone.img_size",
    "model.backbone.out_indices", "model.backbone.trunk_dtype",
    "model.backbone.deform_num_heads", "model.backbone.conv_inplane",
    "model.backbone.interaction_indexes", "model.neck.embed_dim", "model.decode_head.in_channels",
    "model.decode_head.channels", "model.auxiliary_head.in_channels",
    "model.auxiliary_head.channels", "model.test_cfg.crop_size", "model.test_cfg.stride",
    "train_dataloader.batch_size", "total_batch_size", "optim_wrapper.optimizer.lr",
    "train_cfg.max_iters",
    "train_cfg.val_interval", "param_scheduler", "default_hooks.checkpoint.interval",
    "default_hooks.logger.interval",
)


@pytest.mark.parametrize("name", PAPER)
def test_a_demo_config_is_its_paper_config_on_the_tiny_trunk(name):
    paper, demo = load_config(f"paper/{name}"), load_config(f"demo/{name}")
    p, d = paper.to_dict(), demo.to_dict()
    loaders = ("train_dataloader", "val_dataloader", "test_dataloader")
    for loader in loaders:  # compared below, step by step
        for key in ("pipeline",):
            p[loader]["dataset"].pop(key), d[loader]["dataset"].pop(key)
        for key in ("num_workers", "persistent_workers"):
            p[loader].pop(key), d[loader].pop(key)
    changed = {k for k in leaves(p).keys() | leaves(d).keys()
               if leaves(p).get(k, "absent") != leaves(d).get(k, "absent")}
    # the adapter's CPU optimizer: fp32 instead of mmengine's AMP, which needs a GPU
    allowed = DEMO_CHANGES + (("optim_wrapper",) if name == "adapter_tuning" else ())
    assert {k for k in changed if not k.startswith(allowed)} == set()
    assert demo.model.backbone.trunk == "intern_vit_tiny_demo"
    # the same steps at the demo's crop: every size scaled by crop / paper crop
    scale = demo.model.data_preprocessor.size[0] / paper.model.data_preprocessor.size[0]
    for loader in loaders:
        theirs, ours = (c[loader].dataset.pipeline for c in (paper, demo))
        assert [s.type for s in ours] == [s.type for s in theirs]
        for a, b in zip(theirs, ours):
            for key in ("scale", "crop_size", "short_side"):
                if key in a:
                    want = ([round(v * scale) for v in a[key]] if isinstance(a[key], tuple)
                            else round(a[key] * scale))
                    assert (list(b[key]) if isinstance(b[key], tuple) else b[key]) == want
    assert demo.param_scheduler[-1].end == demo.train_cfg.max_iters + 1
    assert 1 < demo.param_scheduler[0].end < demo.train_cfg.max_iters
    assert [s.type for s in demo.param_scheduler] == [s.type for s in paper.param_scheduler]
    stride = [round(v * scale) for v in paper.model.test_cfg.stride]
    assert list(demo.model.test_cfg.stride) == stride


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="fewshot_1of16"):
        config_path("paper", "fewshot_1of3")
    with pytest.raises(ValueError, match="preset"):
        config_path("tiny", "fewshot_1of16")


def test_the_schedulers_that_end_with_the_loop_follow_its_length():
    cfg = load_config("paper/fewshot_1of16", {"train_cfg.max_iters": 300})
    assert cfg.train_cfg.max_iters == 300
    assert [s.end for s in cfg.param_scheduler] == [101, 301]  # the warmup keeps its length
    given = load_config("paper/fewshot_1of16", {"train_cfg.max_iters": 300,
                                                 "param_scheduler.1.end": 350})
    assert [s.end for s in given.param_scheduler] == [101, 350]  # a given end wins
    # one before the loop's end left the lr at 0 for the rest of the run
    with pytest.raises(InputError, match="the schedule ends at iteration 200 of "
                                         "train_cfg.max_iters=300"):
        load_config("paper/fewshot_1of16", {"train_cfg.max_iters": 300,
                                            "param_scheduler.1.end": 200})


def test_dumped_config_reloads_unchanged(tmp_path):
    cfg = load_config("demo/head_tuning", {"train_cfg.max_iters": 7},
                      trunk="intern_vit_tiny_demo_b")
    cfg.dump(str(tmp_path / "ran.py"))
    again = load_config(tmp_path / "ran.py")
    assert again.to_dict() == cfg.to_dict()
    assert again.train_cfg.max_iters == 7 and again.model.backbone.out_indices == [0, 1, 1, 2]


@pytest.mark.parametrize("options, named", [
    ({"model.backbone.embed_dim": 64}, "fixed by the trunk"),
    ({"model.backbone.trunk": "intern_vit_6b_448px_v2_5"}, "choose another with --trunk"),
    ({"model.backbone.out_idices": [1]}, "no such key"),
    ({"train_cfg.max_iters": "ten"}, "expected int"),
])
def test_cfg_options_are_checked_against_the_file(options, named):
    with pytest.raises(InputError, match=named):
        load_config("paper/head_tuning", options)


def test_config_sources_are_the_file_and_its_whole_base_chain():
    from internseg.config import CONFIG_ROOT, config_sources

    sources = config_sources("demo/full_tuning")
    names = [p.relative_to(CONFIG_ROOT).as_posix() for p in sources]
    # a derived demo: its paper config's chain and the demo schedule; a demo file first
    assert names[:2] == ["paper/full_tuning.py", "_base_/demo.py"]
    assert [p.relative_to(CONFIG_ROOT).as_posix() for p in config_sources(
        "demo/linear_probing")][:3] == ["demo/linear_probing.py", "paper/linear_probing.py",
                                        "_base_/demo.py"]
    # inherited through models/upernet.py, not named by full_tuning.py itself
    assert {"_base_/models/upernet.py", "_base_/models/linear.py",
            "_base_/default_runtime.py"} <= set(names)
    assert len(names) == len(set(names))


def test_main_repo_few_shot_precision_stays_an_option():
    """Few-shot trains with fp32 masters as the fork did; the main repo's bf16 weights (and
    bf16 AdamW moments) are one override away."""
    import torch

    from internseg.engine.segmentor import build_segmentor

    fork = build_segmentor(load_config("demo/fewshot_1of16"), device="meta")
    main_repo = build_segmentor(load_config("demo/fewshot_1of16",
                                            {"model.backbone.master_weights": False}),
                                device="meta")
    assert fork.backbone.blocks[0].mlp.fc1.weight.dtype == torch.float32
    assert main_repo.backbone.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16


def test_cfg_options_args_parse_back_to_the_same_values():
    import argparse

    from mmengine.config import DictAction

    from internseg.config import cfg_options_args

    options = {"train_cfg.max_iters": 24, "model.backbone.out_indices": [1, 3],
               "work_dir": "work/x",
               "model.backbone.freeze_trunk": False}
    words = cfg_options_args(options)
    assert words[0] == "--cfg-options"
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    parsed = parser.parse_args(words).cfg_options
    assert parsed == options
    assert cfg_options_args({}) == []


@pytest.mark.parametrize("bad, named", [({"a=b": 1}, "'a=b'"),
                                         ({"model": {"x": 1}}, "cfg_options.model")])
def test_cfg_options_args_refuse_what_cannot_round_trip(bad, named):
    from internseg.config import cfg_options_args

    with pytest.raises(InputError, match=named):
        cfg_options_args(bad)


def test_workflow_sources_are_relative_inside_the_workdir_only(tmp_path):
    from internseg.config import CONFIG_ROOT, workflow_sources

    inside = workflow_sources("paper/head_tuning", CONFIG_ROOT.parent)
    assert inside[0] == "configs/paper/head_tuning.py"
    assert all(not s.startswith("/") for s in inside)
    outside = workflow_sources("paper/head_tuning", tmp_path)
    assert all(s.startswith("/") for s in outside) and len(outside) == len(inside)
