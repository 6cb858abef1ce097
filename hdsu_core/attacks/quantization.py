"""Quantization attack (Zhang et al., ICLR 2025): re-probe the unlearned and the original model after
INT8 and 4-bit weight quantization. A small, sparse weight change can round away: what the model
answers with quantized weights is what a user of a 4-bit build of the unlearned model would get.

Quantizer: torchao (PyTorch's own quantization library; runs on the CPU with the installed torch,
and its weights are real quantized tensors: int8 / int4 codes with per-row or per-group scales,
which the forward pass dequantizes). INT8: symmetric, one scale per output row. 4-bit: symmetric
INT4 in groups of 32 along the input dimension (the block size of GGUF's Q4_0). Every linear layer
and the token embeddings are quantized; norm weights stay float, as in every weight-only scheme.

Besides the accuracy gaps, the probe measures each changed weight's change against the 4-bit bin
width (the scale of its group): a change smaller than half a bin can round to the original code.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch

from hdsu_core.attacks.base import AttackContext, accuracy_of, float_copy, register
from hdsu_core.datasets import QAItem
from hdsu_core.models import quiet_libraries
from hdsu_core.probes import score_mcq

GROUP_SIZE = 32  # 4-bit group size along the input dimension
RETAIN_SAMPLE = 128  # retained items the quantized models are probed on (seeded sample)
SCHEMES = ("quant8", "quant4")


def quantized(model: torch.nn.Module, scheme: str) -> torch.nn.Module:
    """A float32 copy of ``model`` with its linear and embedding weights quantized by torchao."""
    quiet_libraries()  # before torchao's first import
    from torchao.quantization import IntxWeightOnlyConfig, quantize_  # lazy: heavy, only for this attack
    from torchao.quantization.granularity import PerAxis, PerGroup  # lazy: heavy, only for this attack

    if scheme == "quant8":
        config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    elif scheme == "quant4":
        int4 = torch.int4  # type: ignore[attr-defined]  # a torch dtype its stubs do not list
        config = IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(GROUP_SIZE))
    else:
        raise ValueError(f"unknown quantization scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    out = float_copy(model)
    quantize_(out, config, filter_fn=lambda mod, _fqn: _quantizable(mod))
    return out.eval()


def _quantizable(module: torch.nn.Module) -> bool:
    if not isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
        return False
    w = module.weight
    return w.ndim == 2 and w.shape[-1] % GROUP_SIZE == 0  # int4 groups must tile the row


def quantized_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> torchao quantized tensor, for every quantized weight of ``model``."""
    return {n: p for n, p in model.named_parameters() if hasattr(p, "dequantize") and hasattr(p, "scale")}


def bin_width(qweight) -> torch.Tensor:
    """The quantization step (the scale of its row or group) at every element of a quantized weight."""
    scale = qweight.scale
    for dim, block in enumerate(qweight.block_size):
        scale = scale.repeat_interleave(block, dim=dim) if scale.shape[dim] != qweight.shape[dim] else scale
    return scale.to(torch.float32)


def dequantized_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The float weights a quantized model computes with (its quantized tensors dequantized)."""
    return {
        n: (p.dequantize() if n in quantized_weights(model) else p).detach().float()
        for n, p in model.named_parameters()
    }


def change_vs_bins(original: torch.nn.Module, unlearned: torch.nn.Module, q_unlearned, q_original) -> dict:
    """How the unlearned model's weight changes compare with the 4-bit bins of the tensors they sit in."""
    o_state, u_state = original.state_dict(), unlearned.state_dict()
    qu, qo = quantized_weights(q_unlearned), quantized_weights(q_original)
    ratios, survived, in_float = [], 0, 0
    for name, w_u in u_state.items():
        if not torch.is_floating_point(w_u):
            continue
        changed = w_u.float() != o_state[name].float()
        if not changed.any():
            continue
        if name not in qu:
            in_float += int(changed.sum())
            continue
        delta = (w_u.float() - o_state[name].float())[changed].abs().cpu()
        ratios.append(delta / bin_width(qu[name])[changed].cpu())
        survived += int((qu[name].dequantize() != qo[name].dequantize())[changed].sum())
    r = torch.cat(ratios) if ratios else torch.zeros(0)
    n = int(r.numel())
    return {
        "attack_quant4_changed_weights": float(n),
        "attack_quant4_changed_unquantized": float(in_float),
        "attack_quant4_below_half_bin": float((r < 0.5).float().mean()) if n else float("nan"),
        "attack_quant4_median_bin_ratio": float(r.median()) if n else float("nan"),
        "attack_quant4_surviving_fraction": survived / n if n else float("nan"),
    }


def retain_sample(items: Sequence[QAItem], seed: int) -> list[QAItem]:
    if len(items) <= RETAIN_SAMPLE:
        return list(items)
    keep = {it.id for it in random.Random(seed + 7).sample(list(items), RETAIN_SAMPLE)}
    return [it for it in items if it.id in keep]


@register
class Quantization:
    name = "quant"
    title = "Quantization"

    def run(self, ctx: AttackContext) -> dict[str, float]:
        retain = retain_sample(ctx.split.retain, ctx.seed)
        retain_ids = {it.id for it in retain}
        out: dict[str, float] = {}
        q4: dict[str, torch.nn.Module] = {}
        for scheme in SCHEMES:
            ctx.progress("attack", 0.95, f"{scheme}: probing the quantized models")
            for who, model, tok, rows in (
                ("", ctx.model, ctx.tok, ctx.after),
                ("_original", ctx.original, ctx.original_tok, ctx.before),
            ):
                qm = quantized(model, scheme)
                f_acc = accuracy_of(score_mcq(qm, tok, ctx.split.forget, max_len=ctx.max_len))
                r_acc = accuracy_of(score_mcq(qm, tok, retain, max_len=ctx.max_len))
                out[f"attack_{scheme}_forget_acc{who}"] = f_acc
                out[f"attack_{scheme}_retain_acc{who}"] = r_acc
                out[f"attack_{scheme}_forget_gap_points{who}"] = 100 * (f_acc - accuracy_of(rows["forget"]))
                out[f"attack_{scheme}_retain_gap_points{who}"] = 100 * (r_acc - accuracy_of(rows["retain"], retain_ids))
                if scheme == "quant4":
                    q4[who or "unlearned"] = qm
        if ctx.same_architecture:
            out.update(change_vs_bins(ctx.original, ctx.model, q4["unlearned"], q4["_original"]))
        return out
