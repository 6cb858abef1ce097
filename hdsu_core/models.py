"""Models: load Hugging Face causal LMs from a local directory or a GGUF file, build the embedded
demo model, and inject knowledge (fine-tune on a QA set until the model knows it).

No code path here downloads from the hub: every ``from_pretrained`` call passes
``local_files_only=True``.

QA text format (shared by training, probes and unlearning)::

    <bos>Question: {question}\nAnswer: {answer}<eos>

Loss and scores use the answer tokens (+ eos) only; the prompt is context.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from hdsu_core import paths
from hdsu_core.datasets import QAItem

PROMPT = "Question: {question}\nAnswer:"
DEMO_RECIPE = {
    "hidden": 128,
    "layers": 2,
    "heads": 4,
    "intermediate": 256,
    "vocab": 4000,
    "lr": 3e-3,
    "batch": 32,
    "max_epochs": 400,
    "target_acc": 0.99,
    "seed": 0,
    "holdout_fraction": 0.2,
    "max_len": 96,
    "version": 4,
}

ProgressFn = Callable[[str, float, str], None]


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


def _no_progress(phase: str, frac: float, msg: str) -> None:
    pass


def stderr_progress(phase: str, frac: float, msg: str) -> None:
    print(f"[{phase}] {frac * 100:5.1f}% {msg}", file=sys.stderr, flush=True)


@dataclass
class ModelBundle:
    model: torch.nn.Module
    tokenizer: object
    name: str
    path: str
    model_hash: str
    meta: dict = field(default_factory=dict)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------
@dataclass
class Encoded:
    ids: list[int]
    answer_start: int  # index of the first answer token in ids
    offsets: list[tuple[int, int]]  # char offsets into text() for each id ((0,0) for specials)
    text: str  # prompt + answer text the offsets refer to


# Encodings per tokenizer: the stop rule re-scores the same forget / non-member questions and all
# their options at every check (tens of thousands of tokenizer calls in a 300-step run, ~8 % of
# its time). Weakly keyed, so a dropped tokenizer takes its cache with it; bounded per tokenizer.
_ENCODE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_ENCODE_CACHE_MAX = 200_000


def encode_qa(tok, question: str, answer: str, max_len: int = 256) -> Encoded:
    """Token ids of ``<bos>Question: ...\nAnswer: <answer><eos>``, with where the answer starts and
    each token's character offsets. Cached per tokenizer; callers must not mutate the result."""
    try:
        cache = _ENCODE_CACHE.setdefault(tok, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: no cache
        cache = None
    key = (question, answer, max_len)
    if cache is not None and key in cache:
        return cache[key]
    enc = _encode_qa(tok, question, answer, max_len)
    if cache is not None:
        if len(cache) >= _ENCODE_CACHE_MAX:
            cache.clear()
        cache[key] = enc
    return enc


def _encode_qa(tok, question: str, answer: str, max_len: int) -> Encoded:
    prompt = PROMPT.format(question=question.strip())
    ans = " " + answer.strip()
    p = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
    a = tok(ans, add_special_tokens=False, return_offsets_mapping=True)
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    p_ids, p_off = list(p["input_ids"]), [tuple(o) for o in p["offset_mapping"]]
    a_ids = list(a["input_ids"]) + eos
    a_off = [(s + len(prompt), e + len(prompt)) for s, e in a["offset_mapping"]] + [(0, 0)] * len(eos)
    # Keep the answer whole; truncate the question from the left when too long.
    room = max(8, max_len - len(bos) - len(a_ids))
    if len(p_ids) > room:
        p_ids, p_off = p_ids[-room:], p_off[-room:]
    ids = bos + p_ids + a_ids
    return Encoded(ids, len(bos) + len(p_ids), [(0, 0)] * len(bos) + p_off + a_off, prompt + ans)


def collate(encs: Sequence[Encoded], pad_id: int, device="cpu"):
    """Right-padded batch; labels = next-token targets with -100 outside the answer."""
    n = max(len(e.ids) for e in encs)
    ids = torch.full((len(encs), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(encs), n), dtype=torch.long)
    labels = torch.full((len(encs), n), -100, dtype=torch.long)
    for i, e in enumerate(encs):
        L = len(e.ids)
        ids[i, :L] = torch.tensor(e.ids)
        att[i, :L] = 1
        labels[i, e.answer_start : L] = ids[i, e.answer_start : L]
    return ids.to(device), att.to(device), labels.to(device)


def token_logprobs(model, ids, att) -> torch.Tensor:
    """log p(token_t | tokens_<t) for t >= 1, shape (B, T-1), on the model's device."""
    dev = model_device(model)
    ids, att = ids.to(dev), att.to(dev)
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


# Model types whose logits are exactly lm_head(last hidden state), with no scaling or soft-capping
# after it: for these the answer NLL only needs the output layer at the answer positions.
_PLAIN_HEAD_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def answer_logits(model, ids, att, mask: torch.Tensor) -> torch.Tensor:
    """Next-token logits (float) at the positions where ``mask`` (B, T-1) is set, shape (N, V).
    On plain-head models the output layer runs only there: over a 4,000-32,000-token vocabulary it
    is most of the cost of a small model's forward and backward pass, and answers are a few tokens
    of each item. Other models compute all logits and select. Inputs are moved to the model's
    device; the result lives there."""
    dev = model_device(model)
    ids, att, mask = ids.to(dev), att.to(dev), mask.to(dev)
    if has_plain_head(model):
        hidden = model.get_decoder()(input_ids=ids, attention_mask=att).last_hidden_state[:, :-1]
        return model.get_output_embeddings()(hidden[mask]).float()
    return model(input_ids=ids, attention_mask=att).logits[:, :-1][mask].float()


def has_plain_head(model) -> bool:
    return (
        getattr(model.config, "model_type", None) in _PLAIN_HEAD_TYPES
        and hasattr(model, "get_decoder")
        and model.get_output_embeddings() is not None
    )


def answer_nll_from_logp(
    logp: torch.Tensor, ids, mask: torch.Tensor, token_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-item mean NLL, shape (B,), from log-softmax ``logp`` (N, V) at the ``mask`` positions
    (as returned by ``answer_logits``), on ``logp``'s device."""
    ids, mask = ids.to(logp.device), mask.to(logp.device)
    picked = logp.gather(-1, ids[:, 1:][mask].unsqueeze(-1)).squeeze(-1)
    lp = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
    w = mask.float()
    if token_weights is not None:
        w = w * token_weights[:, 1:].to(w.device)
    return -(lp * w).sum(1) / w.sum(1).clamp_min(1e-6)


def answer_nll(model, ids, att, labels, token_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-item mean NLL over answer tokens (optionally weighted), shape (B,)."""
    answer = labels[:, 1:] != -100
    logp = torch.log_softmax(answer_logits(model, ids, att, answer), -1)
    return answer_nll_from_logp(logp, ids, answer, token_weights)


def option_logprob_sums(model, tok, items, max_len: int = 256) -> list[torch.Tensor]:
    """Differentiable MCQ scores: for each item a tensor (n_options,) of each option's summed
    answer log-prob given the question, the quantity whose argmax the MCQ probe takes."""
    encs = [encode_qa(tok, it.question, opt, max_len) for it in items for opt in it.options]
    ids, att, labels = collate(encs, tok.pad_token_id, model_device(model))
    mask = labels[:, 1:] != -100
    logp = torch.log_softmax(answer_logits(model, ids, att, mask), -1)
    sums = -answer_nll_from_logp(logp, ids, mask) * mask.sum(1)
    out, at = [], 0
    for it in items:
        out.append(sums[at : at + len(it.options)])
        at += len(it.options)
    return out


@torch.no_grad()
def option_margins(model, tok, items, max_len: int = 256, batch_items: int = 64) -> list[float]:
    """Per item: the correct option's summed log-prob minus the best distractor's (> 0: the MCQ
    probe answers it correctly). Output layer at answer positions only, so cheaper than score_mcq."""
    out: list[float] = []
    for b in range(0, len(items), batch_items):
        chunk = items[b : b + batch_items]
        for sums, it in zip(option_logprob_sums(model, tok, chunk, max_len), chunk):
            others = torch.cat([sums[: it.answer], sums[it.answer + 1 :]])
            out.append(float(sums[it.answer] - others.max()) if len(others) else float("inf"))
    return out


def option_cross_entropy(model, tok, items, max_len: int = 256) -> torch.Tensor:
    """Per-item cross-entropy of the MCQ decision, shape (B,): -log softmax over the options of
    their summed log-probs, at the correct option. The probes' MCQ rule made differentiable:
    lowering it raises the correct option *and* lowers the distractors that beat it."""
    return torch.stack(
        [-torch.log_softmax(s, 0)[it.answer] for s, it in zip(option_logprob_sums(model, tok, items, max_len), items)]
    )


# ----------------------------------------------------------------------------------------------
# Tokenizer and tiny Llama
# ----------------------------------------------------------------------------------------------
def train_tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama(vocab_size: int, recipe: dict, tok=None):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=recipe["hidden"],
        intermediate_size=recipe["intermediate"],
        num_hidden_layers=recipe["layers"],
        num_attention_heads=recipe["heads"],
        num_key_value_heads=recipe["heads"],
        max_position_embeddings=max(128, recipe["max_len"] + 8),
        tie_word_embeddings=False,
        bos_token_id=getattr(tok, "bos_token_id", 1),
        eos_token_id=getattr(tok, "eos_token_id", 2),
        pad_token_id=getattr(tok, "pad_token_id", 0),
    )
    return LlamaForCausalLM(cfg)


def qa_texts(items: Sequence[QAItem]) -> list[str]:
    out = []
    for it in items:
        out.append(PROMPT.format(question=it.question.strip()) + " " + it.answer_text.strip())
        out.extend(it.options)
    return out


# ----------------------------------------------------------------------------------------------
# Knowledge injection (training on QA items until they are known)
# ----------------------------------------------------------------------------------------------
def train_qa(
    model,
    tok,
    items: Sequence[QAItem],
    *,
    lr: float,
    batch: int,
    max_epochs: int,
    target_acc: float,
    seed: int,
    max_len: int,
    progress: ProgressFn = _no_progress,
    eval_every: int = 10,
    time_budget_s: float | None = None,
) -> dict:
    """Answer-only causal LM training until MCQ accuracy on ``items`` reaches ``target_acc``."""
    from hdsu_core.probes import score_mcq

    set_seed(seed)
    encs = [encode_qa(tok, it.question, it.answer_text, max_len) for it in items]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    rng = random.Random(seed)
    order = list(range(len(encs)))
    t0 = time.time()
    acc, epoch = 0.0, 0
    steps_per_epoch = math.ceil(len(encs) / batch)
    total = max_epochs * steps_per_epoch
    warm = min(50, total // 10 + 1)
    step = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        rng.shuffle(order)
        for s in range(0, len(order), batch):
            chunk = [encs[i] for i in order[s : s + batch]]
            ids, att, labels = collate(chunk, tok.pad_token_id, model_device(model))
            loss = answer_nll(model, ids, att, labels).mean()
            cur_lr = lr * min(1.0, (step + 1) / warm)
            for g in opt.param_groups:
                g["lr"] = cur_lr
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
        if epoch % eval_every == 0 or epoch == max_epochs:
            model.eval()
            acc = float(np.mean([r["correct"] for r in score_mcq(model, tok, items, max_len=max_len)]))
            progress("inject", epoch / max_epochs, f"epoch {epoch} loss {loss.item():.3f} acc {acc:.3f}")
            if acc >= target_acc:
                break
            if time_budget_s and time.time() - t0 > time_budget_s:
                break
    model.eval()
    return {"epochs": epoch, "train_acc": acc, "seconds": round(time.time() - t0, 2), "steps": step}


def _hash_items(items: Sequence[QAItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.question, list(it.options), it.answer]).encode())
    return h.hexdigest()[:16]


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _save(model, tok, out: Path, meta: dict) -> None:
    """Write to a temp dir, then rename: a killed build never leaves a half model behind."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "hdsu_meta.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def inject_knowledge(
    items: Sequence[QAItem],
    *,
    name: str,
    recipe: dict | None = None,
    base: str | Path | None = None,
    progress: ProgressFn = _no_progress,
    cache_dir: Path | None = None,
    device: torch.device | str = "cpu",
) -> ModelBundle:
    """Train a model on ``items`` (the members of a dataset) until it knows them; cached on disk.

    Without ``base`` a tiny Llama with its own BPE tokenizer is trained from scratch (fast on a
    CPU); with ``base`` (a local HF directory) that model is fine-tuned with its own tokenizer,
    on ``device``. Tiny models always train on the CPU: their cached weights are then the same on
    every machine (a GPU would not be faster at that size anyway). Returns the model on the CPU.
    """
    recipe = {**DEMO_RECIPE, **(recipe or {})}
    key = hashlib.sha256(
        json.dumps(
            {"items": _hash_items(items), "recipe": recipe, "base": str(base) if base else None}, sort_keys=True
        ).encode()
    ).hexdigest()[:12]
    out = (cache_dir or paths.model_cache()) / f"{name}-{key}"
    if (out / "hdsu_meta.json").exists():
        return load_model(out)
    set_seed(recipe["seed"])
    if base:
        b = load_model(base)
        model, tok = b.model.to(device), b.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    else:
        progress("inject", 0.0, f"training tokenizer on {len(items)} items")
        tok = train_tokenizer(qa_texts(items), recipe["vocab"])
        model = tiny_llama(len(tok), recipe, tok)
    progress("inject", 0.0, f"training {sum(p.numel() for p in model.parameters()):,} parameters")
    stats = train_qa(
        model,
        tok,
        items,
        lr=recipe["lr"],
        batch=recipe["batch"],
        max_epochs=recipe["max_epochs"],
        target_acc=recipe["target_acc"],
        seed=recipe["seed"],
        max_len=recipe["max_len"],
        progress=progress,
        eval_every=recipe.get("eval_every", 10),
        time_budget_s=recipe.get("time_budget_s"),
    )
    meta = {
        "name": name,
        "recipe": recipe,
        "items": len(items),
        "items_hash": _hash_items(items),
        "base": str(base) if base else None,
        **stats,
    }
    _save(model, tok, out, meta)
    return load_model(out)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def load_model(
    spec: str | Path, *, progress: ProgressFn = _no_progress, dtype: torch.dtype = torch.float32
) -> ModelBundle:
    """``demo`` (build or reuse the embedded demo model), a local HF directory, or a .gguf file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(spec) == "demo":
        return build_demo_model(progress=progress)
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


def demo_items() -> list[QAItem]:
    from hdsu_core import datasets

    return datasets.load("demo", paths.DEMO_KB).items


def member_items(items: Sequence[QAItem], seed: int, holdout_fraction: float) -> list[QAItem]:
    from hdsu_core.tagging import is_member

    return [it for it in items if is_member(it.id, seed, holdout_fraction)]


def build_demo_model(*, progress: ProgressFn = _no_progress, force: bool = False) -> ModelBundle:
    """The embedded demo model: a tiny Llama trained from scratch on the members of the demo KB
    (holdout items are never trained on), cached under ``var/models``."""
    items = demo_items()
    members = member_items(items, DEMO_RECIPE["seed"], DEMO_RECIPE["holdout_fraction"])
    if force:
        for p in paths.model_cache().glob("demo-*"):
            shutil.rmtree(p, ignore_errors=True)
    return inject_knowledge(members, name="demo", recipe=DEMO_RECIPE, progress=progress)


def clone_model(model):
    import copy

    m = copy.deepcopy(model)
    m.eval()
    return m
