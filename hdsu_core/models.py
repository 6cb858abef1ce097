"""Models: load Hugging Face causal LMs from a local directory or a GGUF file, hash, clone and
save them.

No code path here downloads from the hub: every ``from_pretrained`` call passes
``local_files_only=True``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hdsu_core.compute import ModelError
from hdsu_core.model_zoo import NAMED_MODELS, resolve_model_spec
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
    """transformers draws a progress bar per load and save, and logs a multi-line load report
    before it raises on weights that do not fit the config; HDSU reports its own progress, and a
    failed load as one line (``ModelError``)."""
    from transformers.utils import logging as hf_logging  # lazy: heavy import, only to load or save

    quiet_libraries()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


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


def _not_found(path: Path) -> ModelError:
    names = ", ".join(NAMED_MODELS)
    return ModelError(
        f"model not found: {path} (give 'demo', a named model ({names}), "
        "a local Hugging Face model directory, or a .gguf file)"
    )


def check_model_files(spec: str | Path) -> None:
    """What can be checked of a model without loading its weights (so a run is refused before its
    row exists): the path exists; a file is a GGUF whose header and tensor table parse and lie
    within the file; a directory has a readable config.json, weights whose safetensors headers
    parse and cover their files, and a tokenizer whose vocabulary fits the model's embedding.
    Raises ``ModelError`` with one line. A named model (``model_zoo``) is checked as its file."""
    path = Path(resolve_model_spec(spec)).expanduser()
    if not path.exists():
        raise _not_found(path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path}: a model file must be .gguf (or pass a model directory)")
        _check_gguf(path)
        return
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no config.json - not a Hugging Face model directory") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}/config.json cannot be read: {str(e).splitlines()[0]}") from None
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not (path / "pytorch_model.bin").exists():
        raise ModelError(f"{path}: no weights (*.safetensors or pytorch_model.bin)")
    for w in weights:
        _check_safetensors(w)
    _check_tokenizer(path, config if isinstance(config, dict) else {})


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open  # lazy: only when a model directory is checked

    try:  # parses the header; refuses one that is corrupt or does not cover the file
        with safe_open(str(path), "pt") as f:
            list(f.keys())
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
        raise ModelError(f"{path}: corrupt safetensors file ({str(e).splitlines()[0]})") from None


def _check_gguf(path: Path) -> None:
    import gguf  # lazy: only for .gguf models

    try:
        reader = gguf.GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, IndexError, ... on bad bytes
        raise ModelError(f"{path}: not a readable GGUF file, truncated or corrupt ({str(e).splitlines()[0]})") from None
    size = path.stat().st_size
    if end > size:
        raise ModelError(f"{path}: truncated GGUF file ({size:,} bytes; its tensors need {end:,})")


def _check_tokenizer(path: Path, config: dict) -> None:
    """A tokenizer with more tokens than the model has embedding rows would index past the
    embedding on the first rare token: the tokenizer does not belong to these weights."""
    vocab = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    tok_file = path / "tokenizer.json"
    if not vocab or not tok_file.exists():
        return
    from tokenizers import Tokenizer  # lazy: only when a model directory is checked

    try:
        n = Tokenizer.from_file(str(tok_file)).get_vocab_size(with_added_tokens=True)
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises its own exception type
        raise ModelError(f"{tok_file}: cannot read the tokenizer ({str(e).splitlines()[0]})") from None
    if n > int(vocab):
        raise ModelError(_mismatch(path, n, int(vocab)))


def _mismatch(path: Path, n_tokens: int, rows: int) -> str:
    return (
        f"{path}: the tokenizer has {n_tokens:,} tokens but the model's embedding has {rows:,} rows: "
        f"the tokenizer does not match the weights"
    )


def load_model(spec: str | Path, *, dtype: torch.dtype = torch.float32) -> ModelBundle:
    """A local Hugging Face directory or a .gguf file (the embedded demo model is built and loaded
    by ``demo_model.build_demo_model``), or a named model such as ``smollm2-135m`` (its file)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig  # lazy: heavy import, only to load

    quiet_transformers()
    path = Path(resolve_model_spec(spec)).expanduser()
    if not path.exists():
        raise _not_found(path)
    try:
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelError(f"{path}: a model file must be .gguf (or pass a model directory)")
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
            # the GGUF converter draws a plain tqdm bar that transformers' progress-bar switch does not reach
            with contextlib.redirect_stderr(io.StringIO()):
                model = AutoModelForCausalLM.from_pretrained(
                    path.parent,
                    gguf_file=path.name,
                    local_files_only=True,
                    dtype=dtype,
                    quantization_config=GgufConfig(dequantize=True),
                )
            _drop_gguf_quantizer(model)
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
    rows = int(getattr(model.get_input_embeddings(), "num_embeddings", 0) or len(tok))
    n_tokens = len(tok)
    if path.is_file() and tok.get_added_vocab().get("<|endoftext|>") == rows:
        # transformers' GGUF converter starts from GPT-2's tokenizer and leaves its "<|endoftext|>"
        # behind as one added token past the file's vocabulary (never produced by encoding)
        n_tokens -= 1
    if n_tokens > rows:
        raise ModelError(_mismatch(path, n_tokens, rows))
    model.eval()
    meta = {}
    mp = (path if path.is_dir() else path.parent) / "hdsu_meta.json"
    if mp.exists():
        meta = json.loads(mp.read_text())
    return ModelBundle(model, tok, meta.get("name", path.name), str(path), weights_hash(model), meta)


def _drop_gguf_quantizer(model) -> None:
    """transformers 5 loads a GGUF through a quantizer; with ``dequantize=True`` every weight is a
    plain tensor of the asked dtype (never packed GGUF blocks, which could not be trained), but the
    model may still carry the quantizer, and ``save_pretrained`` refuses a model that does (an
    injected SmolLM2 could not be cached, an unlearned one not exported). Nothing is quantized
    any more, so the marker goes."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)


def clone_model(model):
    m = copy.deepcopy(model)
    m.eval()
    return m
