# Full tuning: trunk, resamplers and UperNet all trained; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
experiment = dict(name="full_tuning", head="upernet", trunk="trained", fraction=1)
model = dict(backbone=dict(drop_path_rate=0.4), auxiliary_head=dict(in_index=2))
# A trained trunk does not fit one GPU under plain DDP: shard it (internseg.engine.sharding).
strategy = dict(type="ShardedTrunkStrategy")
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
