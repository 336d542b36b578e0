# Linear probing: frozen trunk, linear head on block 44; 80000 iterations on 20210 images.
_base_ = [
    "../_base_/models/linear.py",
    "../_base_/datasets/ade20k_504.py",
    "../_base_/default_runtime.py",
]
experiment = dict(name="linear_probing", head="linear", trunk="frozen", fraction=1)
model = dict(backbone=dict(out_indices=[44], drop_path_rate=0.0, freeze_trunk=True))
optim_wrapper = dict(optimizer=dict(weight_decay=0.0), paramwise_cfg=dict(layer_decay_rate=1.0))
# Test-time resize as the original's config: SETR_Resize (short side 504, long side uncapped)
val_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
test_dataloader = dict(dataset=dict(pipeline={{_base_.setr_test_pipeline}}))
