"""The sparse delta of a run: for every changed tensor the flat indices and the old and new
values, in one safetensors file. Original + delta reproduces the unlearned weights bit for bit,
and unlearned - delta (writing the old values back) the original.

Changes are found on the bits, not the values: a weight that went from 0.0 to -0.0 (or between
two NaNs) is a change too, so the delta always reproduces the exact bytes that the hashes prove.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

DELTA_FORMAT = "hdsu-sparse-delta/1"
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class TensorDelta:
    indices: torch.Tensor  # flat indices into the tensor, ascending
    old: torch.Tensor
    new: torch.Tensor
    shape: tuple[int, ...]


def _bits(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(_INT_OF_SIZE[flat.element_size()])


def compute_delta(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, TensorDelta]:
    if set(before) != set(after):
        raise ValueError(f"the two models have different tensors: {sorted(set(before) ^ set(after))[:3]}")
    out = {}
    for name in sorted(before):
        a, b = before[name].detach().cpu(), after[name].detach().cpu()
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"tensor {name} changed shape or dtype: {tuple(a.shape)} {a.dtype} -> {tuple(b.shape)} {b.dtype}"
            )
        idx = torch.nonzero(_bits(a) != _bits(b)).reshape(-1)
        if idx.numel():
            idx = idx.to(torch.int32 if a.numel() < 2**31 else torch.int64)
            out[name] = TensorDelta(idx, a.reshape(-1)[idx].clone(), b.reshape(-1)[idx].clone(), tuple(a.shape))
    return out


def changed_weights(delta: dict[str, TensorDelta]) -> int:
    return sum(int(d.indices.numel()) for d in delta.values())


def apply_delta(state: dict[str, torch.Tensor], delta: dict[str, TensorDelta], *, reverse: bool = False) -> None:
    """Write the delta's new values (``reverse``: its old ones) into ``state`` in place."""
    with torch.no_grad():
        for name, d in delta.items():
            if name not in state:
                raise ValueError(f"the delta changes tensor {name}, which the model does not have")
            t = state[name]
            if tuple(t.shape) != d.shape:
                raise ValueError(f"tensor {name} has shape {tuple(t.shape)}, the delta expects {d.shape}")
            values = d.old if reverse else d.new
            t.view(-1)[d.indices.to(torch.int64).to(t.device)] = values.to(device=t.device, dtype=t.dtype)


def save_delta(delta: dict[str, TensorDelta], path: Path, meta: dict) -> None:
    """One safetensors file: NAME::idx, NAME::old, NAME::new per changed tensor; shapes and
    ``meta`` (the base and result root hashes) in the header."""
    from safetensors.torch import save_file  # lazy: only when a model is written

    tensors = {}
    for name, d in delta.items():
        tensors[f"{name}::idx"] = d.indices.contiguous()
        tensors[f"{name}::old"] = d.old.contiguous()
        tensors[f"{name}::new"] = d.new.contiguous()
    header = {"format": DELTA_FORMAT, "shapes": json.dumps({n: list(d.shape) for n, d in delta.items()})}
    header.update({k: str(v) for k, v in meta.items()})
    save_file(tensors, str(path), metadata=header)


def load_delta(path: Path) -> tuple[dict[str, TensorDelta], dict[str, str]]:
    from safetensors import safe_open  # lazy: only when a model is read

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") != DELTA_FORMAT:
            raise ValueError(f"{path}: not an HDSU delta file (format {header.get('format')!r})")
        shapes = json.loads(header["shapes"])
        delta = {
            name: TensorDelta(
                f.get_tensor(f"{name}::idx"), f.get_tensor(f"{name}::old"), f.get_tensor(f"{name}::new"), tuple(shape)
            )
            for name, shape in shapes.items()
        }
    return delta, header
