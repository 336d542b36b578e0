# AdamW + layer-wise lr decay, poly schedule with linear warmup, per iteration; runtime.
default_scope = "mmseg"
# importing it registers internseg's models, hooks, metrics and transforms, and makes every
# checkpoint mmengine loads a weights-only load
custom_imports = dict(imports=["internseg.plugin"], allow_failed_imports=False)
# The paper's batch: 8 GPUs x 2. `internseg train` keeps it with any GPU count (batching.py).
total_batch_size = 16
# The training images: a seeded 1/N subset of the training split (`internseg split`), 1 = all
# of them in file order, as the original's configs (max_image_num) chose them.
train_fraction = 1
optim_wrapper = dict(
    # mmengine's OptimWrapper that also logs the gradient norm of every update (observe.py)
    type="GradNormOptimWrapper",
    grad_norm_window=50,
    # gradient clipping to this total norm; None (no clipping) as in the original
    max_grad_norm=None,
    optimizer=dict(type="AdamW", lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
    # layer-wise decay over the trunk's blocks (the built backbone's depth)
    constructor="InternViTLayerDecayConstructor",
    paramwise_cfg=dict(layer_decay_rate=0.95, decay_embeddings=False),
)
# Poly (power 1) times a linear warmup from 1e-6, per iteration: 1500 warmup iterations of
# 80000. mmengine reaches a scheduler's last value at step end - 1, so `end` is the count + 1:
# the warmup is complete at 1500 and the poly reaches 0 after the last iteration, as in the
# original. A config with other counts restates both (and train_cfg.max_iters).
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1501),
    dict(type="PolyLR", power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=80001),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=80000, val_interval=1000)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="UpdateStepParamSchedulerHook"),
    checkpoint=dict(
        type="CheckpointHook", by_epoch=False, interval=1000, max_keep_ckpts=2, save_last=True
    ),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
custom_hooks = [
    dict(type="VersionsMetaHook"),
    # checkpoints hold tensors and plain types only: they load with weights_only=True
    dict(type="PlainMessageHubHook"),
    # a NaN/inf loss stops the run (exit 2) before the diverged state is checkpointed
    dict(type="FiniteLossHook"),
    # randomness keyed to the iteration: a resumed run trains like an uninterrupted one
    dict(type="IterationSeedHook"),
    # SIGURG (profiles/slurm), SIGTERM or SIGUSR1: checkpoint, exit 75, resubmit, resume
    dict(type="PreemptionHook"),
]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
    dist_cfg=dict(backend="nccl"),
)
# scalars.json for the table and plots; TensorBoard event files beside it (vis_data/)
vis_backends = [dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")]
# No fixed name: the Runner then names it after the run, so a second run in one process (the
# tests) gets its own instance and writes its scalars into its own work dir.
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends)
# the windowed gradient-norm statistics are logged as they stand at the logging iteration
# (a mean over a window of 1: mmengine passes window_size to "current", which refuses it)
log_processor = dict(by_epoch=False, custom_cfg=[
    dict(data_src="grad_norm_mean", method_name="mean", window_size=1),
    dict(data_src="grad_norm_std", method_name="mean", window_size=1),
])
log_level = "INFO"
load_from = None
resume = False
