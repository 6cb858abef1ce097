"""The "quick timing" run-time estimate for a model that has no finished run yet.

One forward + backward of one batch of the model is timed (answer NLL of demo questions, the
loss every method differentiates), cached in ``var/step_times.json`` per model hash, batch shape
and device, and scaled to the planned run: unlearning steps x the items one step touches, plus
the probes before and after (forward passes only). A new model is timed once; the Unlearn page
then shows the estimate without loading the model again (a spec's file size and mtime map to its
model hash in the same cache).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hdsu_core import paths

CACHE_FILE = "step_times.json"
TIMED_BATCH = 16  # items per timed step: the shape the CPU measurement used (16 x 96 tokens)
TIMED_LEN = 96
FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of forward + backward
MCQ_OPTIONS = 4  # each probed item scores each of its options (a forward pass each)


def cache_path() -> Path:
    return paths.home() / CACHE_FILE


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"specs": {}, "steps": {}}  # a missing or broken cache is timed again, never an error
    if not isinstance(data, dict):
        return {"specs": {}, "steps": {}}
    return {"specs": dict(data.get("specs") or {}), "steps": dict(data.get("steps") or {})}


def _spec_key(spec: str) -> str:
    """A model spec and the state of its file, so an edited file is timed again."""
    from hdsu_core.model_zoo import resolve_model_spec  # lazy: kept beside its only use

    if spec == "demo":
        return "demo"
    path = Path(resolve_model_spec(spec)).expanduser()
    try:
        st = path.stat()
    except OSError:
        return f"{path}"
    return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _step_key(model_hash: str, batch: int, seq_len: int, device: str) -> str:
    return f"{model_hash}:{batch}x{seq_len}:{device}"


def _load(spec: str):
    if spec == "demo":
        from hdsu_core.demo_model import build_demo_model  # lazy: torch, only when a step is timed

        return build_demo_model()
    from hdsu_core.models import load_model  # lazy: torch, only when a step is timed

    return load_model(spec)


def time_one_step(bundle, *, batch: int = TIMED_BATCH, seq_len: int = TIMED_LEN, device: str = "cpu") -> float:
    """Seconds of one forward + backward of ``batch`` demo questions (each cut at ``seq_len``
    tokens; the batch is padded to its longest, about 30 tokens)."""
    import torch  # lazy: only when a step is timed

    from hdsu_core.datasets import load_spec  # lazy: kept beside the timing
    from hdsu_core.encoding import collate, encode_qa  # lazy: torch
    from hdsu_core.losses import answer_nll  # lazy: torch

    items = load_spec("demo").items[:batch]
    tok = bundle.tokenizer
    encs = [encode_qa(tok, it.question, it.answer_text, seq_len) for it in items]
    model = bundle.model.to(device)
    ids, att, labels = collate(encs, tok.pad_token_id, torch.device(device))
    model.train()
    try:
        t0 = time.perf_counter()
        answer_nll(model, ids, att, labels).mean().backward()
        seconds = time.perf_counter() - t0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    return max(seconds, 1e-6)


def cached_step(
    spec: str,
    *,
    batch: int = TIMED_BATCH,
    seq_len: int = TIMED_LEN,
    device: str = "cpu",
    cache_file: Path | None = None,
) -> dict | None:
    """The cached timing of ``spec`` (as ``timed_step`` returns it), or None when it was never
    timed: nothing is loaded, so a page can ask on every render."""
    cache = _read_cache(cache_file or cache_path())
    model_hash = cache["specs"].get(_spec_key(spec))
    hit = cache["steps"].get(_step_key(model_hash, batch, seq_len, device)) if model_hash else None
    if hit is None:
        return None
    return {**_shape(model_hash, batch, seq_len, device), "seconds": float(hit), "cached": True}


def timed_step(
    spec: str,
    *,
    batch: int = TIMED_BATCH,
    seq_len: int = TIMED_LEN,
    device: str = "cpu",
    cache_file: Path | None = None,
) -> dict:
    """``{"seconds", "model_hash", "batch", "seq_len", "device", "cached"}`` for one fwd + bwd of
    the model ``spec`` (demo, a named model, a directory or a .gguf file); timed once, then read
    from the cache (``cache_file``, default ``var/step_times.json``)."""
    path = cache_file or cache_path()
    hit = cached_step(spec, batch=batch, seq_len=seq_len, device=device, cache_file=path)
    if hit is not None:
        return hit
    bundle = _load(spec)
    seconds = time_one_step(bundle, batch=batch, seq_len=seq_len, device=device)
    cache = _read_cache(path)  # another process may have written meanwhile: keep its entries
    cache["specs"][_spec_key(spec)] = bundle.model_hash
    cache["steps"][_step_key(bundle.model_hash, batch, seq_len, device)] = round(seconds, 4)
    paths.atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True))
    return {**_shape(bundle.model_hash, batch, seq_len, device), "seconds": seconds, "cached": False}


def _shape(model_hash: str, batch: int, seq_len: int, device: str) -> dict:
    return {"model_hash": model_hash, "batch": batch, "seq_len": seq_len, "device": device}


def estimate_from_step(
    step_seconds: float,
    *,
    timed_batch: int,
    steps: int,
    items_per_step: int,
    probe_items: int,
    probe_rounds: int = 2,
) -> dict:
    """The planned run's time from one timed step (pure): ``steps`` updates of ``items_per_step``
    items each, and ``probe_rounds`` probes (before and after) of ``probe_items`` items with
    ``MCQ_OPTIONS`` forward passes each. ``{"seconds", "unlearn_s", "probe_s", "basis"}``."""
    if step_seconds <= 0 or timed_batch <= 0:
        raise ValueError("a timed step needs a positive time and batch")
    per_item = step_seconds / timed_batch
    unlearn_s = max(0, steps) * max(1, items_per_step) * per_item
    probe_s = probe_rounds * max(0, probe_items) * MCQ_OPTIONS * per_item * FORWARD_SHARE
    return {
        "seconds": unlearn_s + probe_s,
        "unlearn_s": unlearn_s,
        "probe_s": probe_s,
        "basis": "timed step",
        "step_seconds": step_seconds,
        "timed_batch": timed_batch,
        "steps": steps,
    }


def items_per_step(settings: dict, n_forget: int, n_retain: int) -> int:
    """Items one update step computes on: a forget batch and a retain batch (all when fewer)."""
    forget = min(int(settings.get("forget_batch", TIMED_BATCH)), max(1, n_forget))
    retain = min(int(settings.get("retain_batch", TIMED_BATCH)), max(0, n_retain))
    return forget + retain


def quick_estimate(
    spec: str,
    *,
    settings: dict,
    n_forget: int,
    n_retain: int,
    n_holdout: int,
    device: str = "cpu",
    cache_file: Path | None = None,
    measure: bool = True,
) -> dict | None:
    """The quick-timing estimate of a run of model ``spec`` with ``settings`` (``max_steps``,
    ``forget_batch``, ``retain_batch``) on a split of these sizes; ``measure=False``: only from the
    cache (None when this model was never timed)."""
    from hdsu_core.compute import resolve_compute  # lazy: torch, kept beside the timing

    where = str(resolve_compute(device, "float32")[0])  # "auto" times where the run would compute
    step = (timed_step if measure else cached_step)(spec, device=where, cache_file=cache_file)
    if step is None:
        return None
    out = estimate_from_step(
        step["seconds"],
        timed_batch=step["batch"],
        steps=int(settings.get("max_steps", 300)),
        items_per_step=items_per_step(settings, n_forget, n_retain),
        probe_items=n_forget + n_retain + n_holdout,
    )
    return {**out, "cached": step["cached"], "seq_len": step["seq_len"], "device": where}
