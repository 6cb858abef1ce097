"""Models: load Hugging Face causal LMs from a local directory or a GGUF file, hash, clone and
save them.

No code path here downloads from the hub: every ``from_pretrained`` call passes
``local_files_only=True``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hdsu_core.compute import ModelError
from hdsu_core.weight_hashes import hash_state


@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: Any  # a Hugging Face tokenizer (transformers' PreTrainedTokenizerBase)
    name: str
    path: str
    model_hash: str
    meta: dict = field(default_factory=dict)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def weights_hash(model) -> str:
    """Short form (16 hex digits) of the receipt's root hash of the weights."""
    return hash_state(model.state_dict()).root[:16]


def quiet_transformers() -> None:
    """transformers draws a progress bar per load and save; HDSU reports its own progress."""
    from transformers.utils import logging as hf_logging  # lazy: heavy import, only to load or save

    quiet_libraries()
    hf_logging.disable_progress_bar()


def quiet_libraries() -> None:
    """torchao (the quantization attack's library) logs the optional CUDA kernels it cannot load on a
    CPU, and torch a deprecation for each enum torchao registers: noise on stderr, nothing to act on.
    transformers imports torchao itself on the first model load whenever it is installed."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def save_model(model, tok, out: Path, meta: dict) -> None:
    """Write to a temp dir, then rename: a killed build never leaves a half model behind."""
    quiet_transformers()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "hdsu_meta.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def load_model(spec: str | Path, *, dtype: torch.dtype = torch.float32) -> ModelBundle:
    """A local Hugging Face directory or a .gguf file (the embedded demo model is built and loaded
    by ``demo_model.build_demo_model``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy import, only to load

    quiet_transformers()
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(
            f"model not found: {path} (give 'demo', a local Hugging Face model directory, or a .gguf file)"
        )
    try:
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelError(f"{path}: a model file must be .gguf (or pass a model directory)")
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path.parent, gguf_file=path.name, local_files_only=True, dtype=dtype
            )
        else:
            if not (path / "config.json").exists():
                raise ModelError(f"{path}: no config.json - not a Hugging Face model directory")
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - surface any loader failure as one clear line
        raise ModelError(f"could not load model from {path}: {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    meta = {}
    mp = (path if path.is_dir() else path.parent) / "hdsu_meta.json"
    if mp.exists():
        meta = json.loads(mp.read_text())
    return ModelBundle(model, tok, meta.get("name", path.name), str(path), weights_hash(model), meta)


def clone_model(model):
    m = copy.deepcopy(model)
    m.eval()
    return m
