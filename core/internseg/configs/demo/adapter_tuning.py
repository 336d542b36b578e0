# The paper's adapter_tuning, shrunk for the CPU demo (configs/_base_/demo.py): a 128 crop
# (the adapter needs multiples of 32), one interaction range per block of the tiny trunk.
_base_ = ["../paper/adapter_tuning.py", "../_base_/demo.py"]
demo = dict(out_indices=[0, 1, 2, 3], max_iters=80, crop=128)
model = dict(backbone=dict(
    deform_num_heads=4, conv_inplane=16, trunk_dtype="bfloat16",
    interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]]))
# CPU: no AMP (mmengine's needs a GPU); fp32 adapter and heads, bf16 trunk as the other rows
optim_wrapper = dict(_delete_=True, type="GradNormOptimWrapper", grad_norm_window=50,
                     max_grad_norm=None,
                     optimizer=dict(type="AdamW", lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
                     constructor="InternViTLayerDecayConstructor",
                     paramwise_cfg=dict(layer_decay_rate=0.95, decay_embeddings=False))
