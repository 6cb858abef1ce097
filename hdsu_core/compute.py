"""Where and in what precision a run computes: device and dtype from their names, deterministic
kernels, seeds. ``ModelError`` is the one user-facing error of models and devices."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


class ModelError(Exception):
    """A model could not be found, loaded or built (clear, user-facing message)."""


def resolve_device(spec: str | None) -> torch.device:
    """The torch device a run uses. ``auto`` (default): the first CUDA GPU when torch sees one,
    else the CPU; ``cpu``; ``cuda`` or ``cuda:N`` (refused with a clear message when torch sees no
    such GPU, rather than failing later inside a forward pass)."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        try:
            dev = torch.device(spec if ":" in spec else "cuda:0")
        except RuntimeError:
            raise ModelError(f"device {spec!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ModelError(
                f"device {spec!r} requested, but torch sees no CUDA GPU (torch {torch.__version__}, "
                f"{build}); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {spec!r} requested, but torch sees {torch.cuda.device_count()} GPU(s)")
        return dev
    raise ModelError(f"device {spec!r}: not a device (use auto, cpu, cuda or cuda:N)")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(spec: str | None, device: torch.device | None = None) -> torch.dtype:
    """The weight precision of a run: ``float32`` (default) or ``bfloat16`` (half the memory of a
    large model on a GPU). Losses, Fisher scores and update directions are always computed in
    float32; only the weights and activations are bfloat16. float16 is not offered: without loss
    scaling its gradients underflow."""
    key = (spec or "float32").strip().lower()
    if key not in DTYPES:
        raise ModelError(f"dtype {spec!r}: use {' or '.join(DTYPES)}")
    if (
        DTYPES[key] == torch.bfloat16
        and device is not None
        and device.type == "cuda"
        and not torch.cuda.is_bf16_supported()
    ):
        raise ModelError(f"dtype bfloat16: {torch.cuda.get_device_name(device)} does not support it; use float32")
    return DTYPES[key]


def resolve_compute(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """A run's device and weight dtype from their names; ``ModelError`` (one clear line) for a
    device this machine lacks or an unknown dtype. Called before anything is recorded or loaded."""
    dev = resolve_device(device)
    return dev, resolve_dtype(dtype, dev)


def device_label(dev: torch.device) -> str:
    """Human-readable device, recorded with every run: 'cpu' or 'cuda:0 (GPU name)'."""
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def prepare_device(dev: torch.device) -> None:
    """Deterministic kernels where the device offers a choice (CUDA: cuBLAS workspace, no
    nondeterministic atomics where a deterministic kernel exists), so the same config gives the
    same numbers on the same machine. Must run before the first CUDA call of the process."""
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def model_device(model) -> torch.device:
    """Where the model's weights live (inputs are moved there by the helpers below)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def available_devices() -> dict[str, str]:
    """Devices a run can be launched on, value -> label: auto, the CPU and every CUDA GPU torch
    sees (none on a CPU-only machine, so a form never offers a device that is not there)."""
    out = {
        "auto": "auto (GPU if visible, else CPU)" if torch.cuda.is_available() else "auto (CPU: no GPU visible)",
        "cpu": "CPU",
    }
    for i in range(torch.cuda.device_count()):
        out[f"cuda:{i}"] = f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return out
