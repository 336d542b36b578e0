# The few-shot rows: linear head on the last block, whole trunk trained with layer-wise decay.
_base_ = ["./models/linear.py", "./datasets/ade20k_504.py", "./default_runtime.py"]
# The original ran these without DeepSpeed: plain DDP on a bf16 trunk, so AdamW updated bf16
# weights (and kept bf16 moments). master_weights=True keeps fp32 masters instead.
model = dict(
    backbone=dict(out_indices=[47], drop_path_rate=0.4, freeze_trunk=False, master_weights=False)
)
optim_wrapper = dict(optimizer=dict(weight_decay=0.05), paramwise_cfg=dict(layer_decay_rate=0.95))
warmup_iters = 1500
# A trained trunk does not fit one GPU under plain DDP: shard it (internseg.engine.sharding).
strategy = dict(type="ShardedTrunkStrategy")
