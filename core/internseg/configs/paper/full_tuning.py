# Full tuning: trunk, resamplers and UperNet all trained; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/upernet.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
# The table row (internseg.registry): InternVL 1.0 Sec. 4.2.2, ADE20K val, single scale.
experiment = dict(
    setting="full tuning",
    fraction=1,
    paper_miou=58.9,
    published_log="upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5.log",
    released_checkpoint=dict(
        file="upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5.pth",
        sha256="c4c0a70ec14469107ff24738402d6dad03e9e1ce54a52362f40aeba8f0437ff1", size=12772266491),
)
model = dict(backbone=dict(drop_path_rate=0.4), auxiliary_head=dict(in_index=2))
# A trained trunk does not fit one GPU under plain DDP: shard it (internseg.engine.sharding).
strategy = dict(type="ShardedTrunkStrategy")
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
