# The paper's adapter_tuning on the CPU demo (configs/_base_/demo.py), with what the adapter
# needs there: 96 px crops (its sides are multiples of 32), one interaction range per block,
# 4 deformable heads, a 16-channel stem; fp32 adapter and heads (mmengine's AMP needs a GPU)
# and a bf16 trunk, as the other demo rows.
_base_ = ["../paper/adapter_tuning.py"]
demo_schedule = dict(crop=96)
model = dict(
    backbone=dict(
        trunk_dtype="bfloat16", deform_num_heads=4, conv_inplane=16,
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
    ),
)
optim_wrapper = dict(
    _delete_=True, type="GradNormOptimWrapper",
    grad_norm_window={{_base_.optim_wrapper.grad_norm_window}},
    max_grad_norm={{_base_.optim_wrapper.max_grad_norm}},
    optimizer={{_base_.optim_wrapper.optimizer}},
    constructor={{_base_.optim_wrapper.constructor}},
    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}},
)
