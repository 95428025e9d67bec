"""The DeepSpeed configuration the platform generates for cluster runs (no torch import).

The same entry point takes it in `job.json` (`deepspeed`), locally or on LUMI.
"""


# lumi.md: LoRA under ZeRO-3; HF Trainer / TRL fill the "auto" values. No optimizer offload:
# CPU-Adam has open ROCm issues (deepspeedai/DeepSpeed#4768).
def deepspeed_config(stage: int = 3) -> dict:
    return {
        "bf16": {"enabled": "auto"},
        "zero_optimization": {
            "stage": stage,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            "stage3_gather_16bit_weights_on_model_save": True,
            "offload_optimizer": {"device": "none"},
            "offload_param": {"device": "none"},
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
    }
