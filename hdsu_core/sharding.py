"""A frozen base sharded over the processes of a LoRA unlearning run (``--fsdp``; torch's FSDP2,
``fully_shard``), for a model whose weights do not fit one device.

Each decoder layer, the decoder's root (the final norm) and an untied embedding and output layer
are sharded: a process holds 1/N of those weights and gathers a unit's weights only while it
computes. Tied embeddings (one tensor in two modules) stay whole in every process. The unlearning
adapters are left out of the sharding (``ignored_params``): every process holds all of them, so
the methods see plain tensors.
Every process computes the whole batch (``distributed.replicate_data``): sharded layers make every
forward pass a collective, and identical work on identical data keeps the processes in step
through any control flow of a method; the price is that the processes do not split the work.
The result is the one-process LoRA run's, weight for weight (tests/test_distributed.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hdsu_core import distributed


@dataclass
class ShardedBase:
    """What a sharded run keeps besides the sharded model: rank 0's plain copy of the original
    (on the CPU; the unlearned weights are gathered into it for the diff, the receipt and the
    delta), the original's state (what the diff compares with), and the adapters' start values."""

    skeleton: torch.nn.Module | None  # None on the other ranks
    state_before: dict[str, torch.Tensor]
    adapter_start: dict[str, torch.Tensor]
    local_elements: int  # weights this process holds: its base shard and the adapters


def process_mesh(device: torch.device) -> Any:
    """The one-dimensional device mesh over every process (a collective: all of them call it)."""
    from torch.distributed.device_mesh import init_device_mesh  # lazy: only a sharded run loads FSDP

    return init_device_mesh(device.type, (distributed.world(),))


def shard(adapted: torch.nn.Module, device: torch.device, mesh: Any) -> int:
    """Shard ``adapted`` (a peft model) in place over ``mesh`` on ``device`` (no collective: each
    process keeps its rows of every tensor); returns the weights this process now holds. From
    here on every process computes the whole batch."""
    from torch.distributed.fsdp import fully_shard  # lazy: only a sharded run loads FSDP

    base = adapted.get_base_model()  # type: ignore[operator]
    ignored = {p for p in adapted.parameters() if p.requires_grad}  # the adapters
    for layer in _decoder_layers(base):
        fully_shard(layer.to(device), mesh=mesh, ignored_params=ignored)  # whole on the device one layer at a time
    embed, head = base.get_input_embeddings(), base.get_output_embeddings()
    if head is None or head.weight is embed.weight:  # tied (SmolLM2): one tensor for two modules stays whole
        ignored |= {embed.weight}
    else:  # own units: the losses call the decoder and the head one after the other (losses.answer_logits)
        fully_shard(embed.to(device), mesh=mesh)
        fully_shard(head.to(device), mesh=mesh)
    _move_unsharded(adapted, device)
    fully_shard(base.get_decoder(), mesh=mesh, ignored_params=ignored)  # the final norm; the layers' root
    distributed.replicate_data(True)
    return local_elements(adapted)


def _move_unsharded(model: torch.nn.Module, device: torch.device) -> None:
    """The adapters, a tied embedding, the norm and the buffers onto ``device`` in place (the
    same Parameter objects: FSDP's ignored set and a tied pair stay what they are)."""
    from torch.distributed.tensor import DTensor  # lazy: only a sharded run loads FSDP

    for p in model.parameters():
        if not isinstance(p, DTensor):
            p.data = p.data.to(device)
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None:
                module._buffers[name] = buf.to(device)


def _decoder_layers(base: Any) -> list[torch.nn.Module]:
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError("--fsdp needs a decoder with a 'layers' list (Llama-style models)")
    return list(layers)


def local_elements(model: torch.nn.Module) -> int:
    """Weight elements stored in this process (a sharded tensor counts its local part)."""
    return sum(_local(p).numel() for p in model.parameters())


def _local(p: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor  # lazy: only a sharded run loads FSDP

    return p.to_local() if isinstance(p, DTensor) else p


@torch.no_grad()
def merge_into_shards(adapted: torch.nn.Module) -> None:
    """``W += scaling * B @ A`` for every adapted weight, each process on its own rows of ``W``
    (FSDP2 shards dim 0 as ``torch.chunk`` does): element for element what peft's merge does in
    one process. The adapters are then marked merged, so the model computes with ``W`` alone."""
    from peft.tuners.lora import LoraLayer  # lazy: only LoRA runs need peft

    for module in adapted.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name in module.active_adapters:
            delta = module.get_delta_weight(name)  # type: ignore[operator]
            weight = module.get_base_layer().weight
            assert isinstance(weight, torch.Tensor)
            chunks = torch.chunk(delta, distributed.world(), dim=0)
            if distributed.rank() < len(chunks):  # fewer rows than processes: the last hold none
                local = _local(weight)
                local += chunks[distributed.rank()].to(local.dtype)
            module.merged_adapters.append(name)


def gather_into(adapted: torch.nn.Module, skeleton: torch.nn.Module | None) -> torch.nn.Module | None:
    """The whole merged model in rank 0's ``skeleton`` (on its CPU; a collective every process
    calls): the sharded weights gathered under their plain names, the adapters dropped (merged)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )  # lazy: only a sharded run loads FSDP

    full = get_model_state_dict(adapted, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if skeleton is None:
        return None
    plain = {name: t for key, t in full.items() if (name := plain_name(key)) is not None}
    skeleton.load_state_dict(plain, strict=True)
    return skeleton


def plain_name(peft_key: str) -> str | None:
    """The plain model's name of a peft state-dict key; None for an adapter's own matrices."""
    if ".lora_" in peft_key:
        return None
    return peft_key.removeprefix("base_model.model.").replace(".base_layer.", ".")
