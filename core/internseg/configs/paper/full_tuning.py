# Full tuning: trunk, resamplers and UperNet all trained; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
model = dict(backbone=dict(drop_path_rate=0.4), auxiliary_head=dict(in_index=2))
# A trained trunk does not fit one GPU under plain DDP: shard it (internseg.engine.sharding).
strategy = dict(type="ShardedTrunkStrategy")
