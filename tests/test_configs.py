import pytest
import yaml

from conftest import FACTS

from internseg.config import config_path, load_config, shrink
from internseg.errors import InputError
from internseg.registry import experiments

PAPER = sorted(experiments("paper"))
# the eight rows of the paper's table (the adapter row has its own facts: test_adapter.py)
RECORDED = sorted(set(yaml.safe_load(FACTS.read_text())["experiments"]) - {"common"})


def test_every_paper_experiment_has_a_demo_overlay():
    assert PAPER == sorted(experiments("demo"))


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
    assert (backbone.patch_size, backbone.embed_dim, backbone.depth, backbone.num_heads) == (
        14, 3200, 48, 25)
    assert backbone.img_size == common["crop"] == 504
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
    assert cfg.optim_wrapper.paramwise_cfg.num_layers == 48
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
    assert cfg.experiment.fraction == ref["fraction"]
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


@pytest.mark.parametrize("name", PAPER)
def test_demo_config_keeps_structure_and_shrinks(name):
    paper, demo = load_config(f"paper/{name}"), load_config(f"demo/{name}")
    assert demo.model.backbone.freeze_trunk == paper.model.backbone.freeze_trunk
    assert demo.model.decode_head.type == paper.model.decode_head.type
    assert ("auxiliary_head" in demo.model) == ("auxiliary_head" in paper.model)
    assert demo.model.backbone.embed_dim == 96 and demo.model.backbone.depth == 4
    assert all(0 <= i < 4 for i in demo.model.backbone.out_indices)
    assert demo.train_cfg.max_iters < paper.train_cfg.max_iters
    assert demo.param_scheduler[1].end == demo.train_cfg.max_iters + 1
    assert 1 <= demo.warmup_iters < demo.max_iters == demo.train_cfg.max_iters
    assert demo.optim_wrapper.paramwise_cfg.num_layers == 4
    # the same test-time resize (capped or SETR), at the demo's crop
    resize = [s for s in demo.test_dataloader.dataset.pipeline if "Resize" in s.type][0]
    assert resize.type == [s for s in paper.test_dataloader.dataset.pipeline
                           if "Resize" in s.type][0].type
    crop = demo.model.data_preprocessor.size[0]
    assert resize.get("short_side", crop) == crop
    assert demo.optim_wrapper.paramwise_cfg.layer_decay_rate == (
        paper.optim_wrapper.paramwise_cfg.layer_decay_rate)


def test_shrink_rejects_unknown_setting():
    cfg = load_config("paper/fewshot_1of16")
    with pytest.raises(InputError, match="widht"):
        shrink(cfg, out_indices=[3], max_iters=10, widht=3)
    with pytest.raises(InputError, match="missing.*crop"):
        shrink(cfg, trunk="intern_vit_tiny_demo", out_indices=[3], max_iters=10)


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="fewshot_1of16"):
        config_path("paper", "fewshot_1of3")
    with pytest.raises(ValueError, match="preset"):
        config_path("tiny", "fewshot_1of16")


def test_schedule_follows_max_iters_from_the_command_line():
    cfg = load_config("paper/fewshot_1of16", {"max_iters": 300, "warmup_iters": 30})
    assert cfg.train_cfg.max_iters == 300
    assert [s.end for s in cfg.param_scheduler] == [31, 301]


def test_dumped_config_reloads_unchanged(tmp_path):
    cfg = load_config("demo/head_tuning", {"train_cfg.max_iters": 7})
    cfg.dump(str(tmp_path / "ran.py"))
    again = load_config(tmp_path / "ran.py")
    assert again.train_cfg.max_iters == 7
    assert [s.end for s in again.param_scheduler] == [s.end for s in cfg.param_scheduler]
    assert again.model.backbone.embed_dim == 96


def test_config_sources_are_the_file_and_its_whole_base_chain():
    from internseg.config import CONFIG_ROOT, config_sources

    sources = config_sources("demo/full_tuning")
    names = [p.relative_to(CONFIG_ROOT).as_posix() for p in sources]
    assert names[:2] == ["demo/full_tuning.py", "paper/full_tuning.py"]
    # inherited through models/upernet.py, not named by full_tuning.py itself
    assert {"_base_/models/upernet.py", "_base_/models/linear.py",
            "_base_/default_runtime.py"} <= set(names)
    assert len(names) == len(set(names))


def test_main_repo_few_shot_precision_stays_an_option():
    """Few-shot trains with fp32 masters as the fork did; the main repo's bf16 weights (and
    bf16 AdamW moments) are one override away."""
    import torch

    from internseg.engine.train import build_segmentor

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

    options = {"max_iters": 24, "model.backbone.out_indices": [1, 3], "work_dir": "work/x",
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
