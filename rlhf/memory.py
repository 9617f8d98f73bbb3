"""What lets a larger model fit a device: mixed precision, gradient checkpointing and micro-batches.

Each takes the job's config (`MemoryOptions`, `micro_batch_size`) so that every trainer, PPO's too,
applies them the same way. FSDP, which shards the model over processes, lives in `distributed`.
"""

import contextlib

import torch
from transformers import PreTrainedModel

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_mixed_precision(config, device):
    """Refuse a `mixed_precision` the device cannot run, before anything is loaded or written."""
    wanted = config.mixed_precision
    if wanted == "no":
        return
    if getattr(config, "dtype", "float32") != "float32":
        raise ValueError(f"mixed_precision {wanted} keeps the weights in float32 and computes in {wanted}; "
                         f"leave dtype float32 (it is {config.dtype}) or set mixed_precision no.")
    if wanted == "fp16" and device.type != "cuda":
        raise ValueError(f"mixed_precision fp16 needs a CUDA GPU, which scales its gradients against underflow; "
                         f"on {device.type} use bf16 or no.")
    if wanted == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{torch.cuda.get_device_name(device)} cannot compute in bf16; use mixed_precision fp16 "
                         "or no.")


def autocast(config, device):
    """The context for forward passes: bf16 or fp16 compute where autocast allows it, the weights in float32."""
    if config.mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=COMPUTE_DTYPES[config.mixed_precision])


def grad_scaler(config, device):
    """A scaler for fp16's small gradients (which would underflow to zero); with bf16 or float32 it does nothing.

    Under FSDP the gradients are DTensors, whose check for infinities is reduced over the processes, so
    every process skips the same steps.
    """
    return torch.amp.GradScaler(device.type, enabled=config.mixed_precision == "fp16")


def enable_gradient_checkpointing(model):
    """Recompute each transformer block's activations in the backward pass instead of keeping them.

    The Hugging Face model may be wrapped (a reward model, LoRA adapters): the outermost one inside is
    changed. Non-reentrant checkpointing gives gradients to the weights inside a block even when its
    input needs none, as with frozen embeddings under LoRA.
    """
    inner = next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)
    if inner is None:
        raise ValueError(f"gradient_checkpointing needs a Hugging Face model; {type(model).__name__} holds none.")
    inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def micro_batches(batch, size):
    """A batch cut into passes of `size` examples, the last one what is left (0: the whole batch in one)."""
    size = size or len(batch)
    return [batch[start:start + size] for start in range(0, len(batch), size)]
