"""Data parallelism of one run over several processes (``torchrun``, DDP-style): every process
holds the whole model and runs the same code on the same seeded draws; the gradient work of a
batch is split by rows (``shard``) and the partial sums are added with ``torch.distributed``
collectives (gloo on the CPU, NCCL on GPUs), so each process ends every step with the gradient
the one-process run computes, and takes the same step. Only rank 0 writes results.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function is a no-op: one process, the
whole batch. The losses are written as "sum over this rank's rows / rows of the whole batch", so
the all-reduced SUM is the one-process mean (``shard_mean``).

A run with a sharded base (``--fsdp``, sharding.py) sets ``replicate_data``: every process then
computes the whole batch (each holds only its shard of the weights, so every forward pass is a
collective that all of them must make in the same order), and the data helpers behave as in one
process; ``any_rank`` stays a collective and ``is_main`` stays per rank."""

from __future__ import annotations

import datetime as dt
import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as tdist

# A rank that waits longer than this in a collective fails (instead of the 30-minute default):
# a crashed peer must not keep the run "running" for half an hour.
COLLECTIVE_TIMEOUT_S = 600

# True in a run whose processes all compute the whole batch (a sharded base, sharding.py).
_replicated = False


def launched() -> bool:
    """True in a process started by torchrun for a run with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun), before ``init``."""
    return int(os.environ.get("RANK", "0"))


def auto_processes(device: torch.device) -> int:
    """How many processes a run uses when not told: one per GPU when the run computes on CUDA
    and torch sees more than one, else one."""
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        return torch.cuda.device_count()
    return 1


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def world() -> int:
    return tdist.get_world_size() if active() else 1


def replicate_data(flag: bool) -> None:
    """Every process computes the whole batch (True) or its rows of it (False, the default)."""
    global _replicated
    _replicated = flag


def splits_data() -> bool:
    """Whether the processes split each batch by rows (a data-parallel run) and sum their parts."""
    return active() and not _replicated


def _data_world() -> int:
    return world() if splits_data() else 1


def _data_rank() -> int:
    return rank() if splits_data() else 0


def rank() -> int:
    return tdist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> None:
    """Join the process group torchrun describes (``MASTER_ADDR`` ... in the environment):
    NCCL when the run computes on CUDA GPUs, else gloo. Idempotent; nothing without torchrun."""
    if not launched() or active():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_device(device))
    tdist.init_process_group(backend=backend, timeout=dt.timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def close() -> None:
    replicate_data(False)
    if active():
        tdist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: on CUDA the GPU of its local rank (one GPU per process), else ``device``."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard_bounds(n: int, ranks: int, r: int) -> tuple[int, int]:
    """Rows [start, stop) of rank ``r`` of ``ranks`` for a batch of ``n``: contiguous, sizes
    differing by at most one, together every row exactly once."""
    return r * n // ranks, (r + 1) * n // ranks


def shard(rows: Any) -> Any:
    """This rank's rows of a batch (all of them in one process): a list or a tensor of row indices."""
    start, stop = shard_bounds(len(rows), _data_world(), _data_rank())
    return rows[start:stop]


def mine(i: int) -> bool:
    """Whether micro-batch number ``i`` of a loop is this rank's (round robin)."""
    return i % _data_world() == _data_rank()


def shard_mean(values: torch.Tensor, n_total: int) -> torch.Tensor:
    """This rank's share of the mean over a whole batch of ``n_total`` rows: the plain mean in
    one process, else the sum of this rank's rows / ``n_total`` (the ranks' shares add up to it)."""
    if not splits_data():
        return values.mean()
    return values.sum() / max(n_total, 1)


def all_sum_(t: torch.Tensor) -> torch.Tensor:
    """Add ``t`` over the ranks' parts, in place (NCCL needs it on the GPU: it is); returns ``t``."""
    if splits_data():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_sum_grads_(params: Sequence[torch.nn.Parameter]) -> None:
    """DDP's gradient all-reduce, as one flat buffer (a missing gradient counts as 0), summed:
    each rank's loss is already its share of the whole batch's mean."""
    if not splits_data():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = all_sum_(torch.cat([g.reshape(-1) for g in grads]))
    off = 0
    for p, g in zip(params, grads):
        p.grad = flat[off : off + g.numel()].view_as(p).to(p.dtype)
        off += g.numel()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on any (a cancel seen by one process stops them all at
    the same step, so no rank waits forever in a collective the others left)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)  # a collective also when the data is replicated
    return bool(t.item() > 0)


def union(values: set[int]) -> set[int]:
    """The union of every rank's set (of its part of the work)."""
    if not splits_data():
        return values
    gathered: list[set[int] | None] = [None] * world()
    tdist.all_gather_object(gathered, values)
    out: set[int] = set()
    for g in gathered:
        out |= g or set()
    return out


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds and caches a model), the others after it (they
    find the cache): no two processes write the same cache directory."""
    if active() and not is_main():
        tdist.barrier()
    yield
    if active() and is_main():
        tdist.barrier()


@contextmanager
def in_turn() -> Iterator[None]:
    """The ranks run the block one after another, rank 0 first (it may build a cache the others
    find): a process that loads a whole model and keeps only its shard frees the rest before the
    next one loads, so the host holds one whole copy at a time. No collective inside the block."""
    if not active():
        yield
        return
    for _ in range(rank()):
        tdist.barrier()
    yield
    for _ in range(world() - 1 - rank()):
        tdist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else torch.device("cpu")
