"""LoRA knowledge injection (``peft``): wrap a causal LM's attention and MLP Linear layers in
low-rank adapters, count what trains, merge the adapters back into plain weights."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

# The Linear layers of a Llama block (attention, then MLP): the demo / tiny models and SmolLM2.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def wrap(model: torch.nn.Module, r: int) -> torch.nn.Module:
    """``model`` with rank-``r`` adapters on ``LORA_TARGETS``; only the adapters train. Alpha 2r
    (scaling 2) is the usual choice; no dropout, so a seeded run gives the same weights."""
    from peft import LoraConfig, get_peft_model  # lazy: only an injection with --inject-lora needs it

    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, bias="none", target_modules=list(LORA_TARGETS))
    return get_peft_model(model, config)


def trainable_params(model: torch.nn.Module) -> int:
    """Elements that get gradients (with adapters: the adapters' A and B matrices only)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with ``W + scaling * B @ A`` in place of every adapted weight: the rest of
    the pipeline (unlearning, probes, receipt, export) never sees peft modules."""
    merged = model.merge_and_unload()  # type: ignore[operator]
    for p in merged.parameters():
        p.requires_grad_(True)  # peft froze the base; the unlearning methods train these weights
    return merged


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights before the adapters, on the CPU (what ``weights_changed`` diffs against)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def weights_changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> int:
    """Elements of the merged model that differ from the base: at most the adapted matrices."""
    after = model.state_dict()
    return int(sum((before[k] != after[k].detach().cpu()).sum().item() for k in before))


# Unlearning through adapters (``RunConfig.unlearn_lora_r``, ``--lora R``): the method trains only
# the adapters, the engine merges them before the probes, the diff, the receipt and the export.


def wrap_for_unlearning(model: torch.nn.Module, r: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """``model`` with rank-``r`` adapters for an unlearning method, and the adapters' initial
    values (what ``adapter_changed`` diffs against). Seeded here: the adapters' random A matrices
    must be the same in every process of a data-parallel run and in a rerun, whatever the model
    loading before consumed of the generator."""
    torch.manual_seed(seed)
    wrapped = wrap(model, r)
    start = {n: p.detach().to("cpu", copy=True) for n, p in wrapped.named_parameters() if p.requires_grad}
    return wrapped, start


def adapter_changed(start: dict[str, torch.Tensor], model: torch.nn.Module) -> int:
    """Adapter elements the method moved (a masked method moves only its mask's share of them)."""
    live = dict(model.named_parameters())
    return int(sum((start[n] != live[n].detach().cpu()).sum().item() for n in start))


class AdapterOffReference:
    """The frozen reference of a LoRA unlearning run without a second copy of the weights: the
    adapted model with its adapters switched off (peft's ``disable_adapter``), in eval mode and
    without gradients, is exactly the model before unlearning (a Linear's base layer alone). Used
    where the methods use ``ctx.ref_model``: called like the model, and through its decoder and
    output layer (``losses.answer_logits``), which are covered too; anything else passes through."""

    def __init__(self, adapted: torch.nn.Module):
        self._adapted = adapted

    @contextlib.contextmanager
    def adapters_off(self) -> Iterator[None]:
        training = self._adapted.training
        self._adapted.eval()
        try:
            with torch.no_grad(), self._adapted.disable_adapter():  # type: ignore[operator]
                yield
        finally:
            self._adapted.train(training)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.adapters_off():
            return self._adapted(*args, **kwargs)

    def eval(self) -> "AdapterOffReference":  # always evaluated in eval mode; never switches the trained model
        return self

    def train(self, mode: bool = True) -> "AdapterOffReference":
        return self

    def get_decoder(self) -> "_OffCall":
        return _OffCall(self, self._adapted.get_decoder())  # type: ignore[operator]

    def __getattr__(self, name: str) -> Any:  # config, parameters, get_output_embeddings (not adapted)
        return getattr(self._adapted, name)


class _OffCall:
    """A submodule of the adapted model called with the adapters off."""

    def __init__(self, ref: AdapterOffReference, module: torch.nn.Module):
        self._ref, self._module = ref, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._ref.adapters_off():
            return self._module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def frozen_reference(adapted: torch.nn.Module) -> AdapterOffReference:
    """The reference a LoRA unlearning run compares against (see ``AdapterOffReference``)."""
    return AdapterOffReference(adapted)
