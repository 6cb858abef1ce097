"""GPU efficiency of a run: bfloat16 autocast of the forward passes on CUDA, gradient
checkpointing, and the batch size chosen from the GPU's free memory when the user set none.
On the CPU the first and the last are no-ops (autocast on a CPU is slower, and a CPU has no
device memory to fit); checkpointing works anywhere (it trades recomputation for activations)."""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch

# Share of the free GPU memory a batch may plan for: the rest covers the allocator's
# fragmentation, the optimizer state of the baselines and what the estimate leaves out.
MEMORY_SHARE = 0.5
BATCH_KEYS = ("forget_batch", "retain_batch")


def autocast(device: torch.device, enabled: bool) -> ContextManager[Any]:
    """bfloat16 autocast of matmuls and attention on a CUDA GPU that supports it, when
    ``enabled``; nothing elsewhere. Losses, Fisher scores and update directions stay float32
    (the methods call ``.float()`` on what they sum), so only the forward passes get cheaper."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast_label(device: torch.device, enabled: bool) -> str | None:
    """What the run info records: "bfloat16" when autocast is on, else None."""
    return "bfloat16" if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def enable_checkpointing(model) -> bool:
    """Gradient checkpointing of a Hugging Face model (activations recomputed in the backward
    pass: memory for depth x batch x length drops to about one layer's); non-reentrant, so it
    works with ``torch.autograd.grad`` on a few masked tensors and frozen embeddings. Returns
    whether the model supports it."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    # transformers 5 names it activation checkpointing (gradient_checkpointing_* are deprecated aliases).
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return True


def disable_checkpointing(model) -> None:
    """Back to plain backward passes (the probes after the run and the saved model need none)."""
    model.activation_checkpointing_disable()


def bytes_per_item(config, seq_len: int, dtype: torch.dtype, checkpointing: bool = False) -> int:
    """Estimated device memory of one item (``seq_len`` tokens) in a forward + backward pass of
    a decoder-only transformer: activations per layer ~ seq x hidden x (34 + 5 heads seq / hidden)
    bytes at 16 bit (Korthikanti et al. 2022, no recomputation; one layer's worth with
    checkpointing), scaled to the weights' precision, plus the float32 logits, their log-softmax
    and its gradient (3 x seq x vocab x 4 bytes)."""
    hidden, layers = int(config.hidden_size), int(config.num_hidden_layers)
    heads, vocab = int(config.num_attention_heads), int(config.vocab_size)
    scale = torch.finfo(dtype).bits / 16
    per_layer = seq_len * hidden * (34 + 5 * heads * seq_len / hidden) * scale
    stored_layers = 1 + (0 if checkpointing else layers - 1)
    return int(per_layer * stored_layers + 3 * seq_len * vocab * 4 + seq_len * hidden * layers * 2 * scale)


def fitting_batch(free_bytes: int, per_item: int, wanted: int) -> int:
    """The largest batch up to ``wanted`` whose estimate fits in ``MEMORY_SHARE`` of the free
    memory, at least 1 (a batch of one that does not fit fails in the first step, with CUDA's
    own out-of-memory message)."""
    return max(1, min(wanted, int(free_bytes * MEMORY_SHARE) // max(per_item, 1)))


def batch_settings(
    settings: dict, defaults: dict, free_bytes: int | None, per_item: int
) -> tuple[dict, dict[str, int]]:
    """The run's settings with every batch size the user did not set (``BATCH_KEYS`` the method
    has) lowered to what fits ``free_bytes`` (None: not on a GPU, unchanged). Returns the
    settings and the sizes chosen (for the run info)."""
    if free_bytes is None:
        return settings, {}
    chosen = {
        k: fitting_batch(free_bytes, per_item, int(defaults[k]))
        for k in BATCH_KEYS
        if k in defaults and k not in settings
    }
    return {**settings, **chosen}, chosen


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device (``torch.cuda.mem_get_info``), None elsewhere."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)
