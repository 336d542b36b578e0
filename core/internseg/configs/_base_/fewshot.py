# The few-shot rows: linear head on the last block, whole trunk trained with layer-wise decay.
_base_ = ["./models/linear.py", "./datasets/ade20k_504.py", "./default_runtime.py"]
# The published few-shot numbers come from the DeepSpeed fork (InternVL-MMDetSeg), whose
# few-shot configs train under ZeRO-1 bf16: bf16 weights in the forward, fp32 master weights
# and fp32 AdamW moments in the optimizer. master_weights=True is that. master_weights=False
# is the main InternVL repo's path (deepspeed = False, a bf16 trunk under plain DDP: AdamW
# updates bf16 weights and keeps bf16 moments), kept as an option.
model = dict(
    backbone=dict(out_indices=[47], drop_path_rate=0.4, freeze_trunk=False, master_weights=True)
)
optim_wrapper = dict(optimizer=dict(weight_decay=0.05), paramwise_cfg=dict(layer_decay_rate=0.95))
# A trained trunk does not fit one GPU under plain DDP: shard it (internseg.engine.sharding).
strategy = dict(type="ShardedTrunkStrategy")
# The 1/16 to 1/2 configs test with the capped resize; 1/1 goes back to SETR_Resize.
val_dataloader = dict(dataset=dict(pipeline={{_base_.capped_test_pipeline}}))
test_dataloader = val_dataloader
