"""Canonical hashes of model weights: one sha256 per tensor (over its dtype, shape and raw bytes)
and one root hash over the per-tensor hashes in name order, so that a receipt can prove the whole
model and also point at the one tensor that differs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

import torch


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The tensor's raw bytes (bit-exact for every dtype, bfloat16 included: numpy has none)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_hash(t: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(f"{str(t.dtype).replace('torch.', '')}|{','.join(map(str, t.shape))}|".encode())
    h.update(tensor_bytes(t))
    return h.hexdigest()


def root_hash(tensor_hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensor_hashes):
        h.update(f"{name}:{tensor_hashes[name]}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class WeightsHash:
    root: str
    tensors: dict[str, str]

    def to_dict(self) -> dict:
        return {"root": self.root, "tensors": dict(sorted(self.tensors.items()))}

    @classmethod
    def from_dict(cls, d: dict) -> "WeightsHash":
        return cls(d["root"], dict(d["tensors"]))


def hash_state(state: dict[str, torch.Tensor]) -> WeightsHash:
    """Hashes of a state dict (tied weights appear under each of their names, as state_dict lists
    them, so a model saved and loaded again hashes the same)."""
    tensors = {name: tensor_hash(t) for name, t in state.items()}
    return WeightsHash(root_hash(tensors), tensors)


def tied_aliases(state: Mapping[str, torch.Tensor]) -> set[str]:
    """Names of a live model's state dict that are a second name of an earlier tensor (tied
    weights: SmolLM2's ``lm_head.weight`` is its ``model.embed_tokens.weight``). They are hashed
    under every name (as state_dict lists them) but counted and stored in a delta once."""
    seen: set[tuple] = set()
    out: set[str] = set()
    for name, t in state.items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if key in seen:
            out.add(name)
        seen.add(key)
    return out


def first_mismatch(expected: dict[str, str], actual: dict[str, str]) -> str | None:
    """The first tensor name (in name order) that is missing, extra or different; None if equal."""
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            return name
    return None


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ids_hash(ids) -> str:
    """Hash of a sorted id list (the receipt pins the forget / retain / holdout items by it)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
