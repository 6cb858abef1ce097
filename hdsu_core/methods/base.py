"""Shared harness for unlearning methods: context, batching, losses, the common stopping rule."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from hdsu_core import distributed
from hdsu_core.compute import model_device
from hdsu_core.datasets import QAItem
from hdsu_core.encoding import Encoded, collate, encode_qa
from hdsu_core.losses import answer_nll, item_answer_losses, mean_answer_loss
from hdsu_core.methods import schema
from hdsu_core.metrics import mia_auc_loss
from hdsu_core.probes import score_mcq

METHODS: dict[str, type] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


def get_method(name: str):
    try:
        return METHODS[name]()
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def run_defaults(method, lora: bool) -> dict:
    """A method's defaults for a run: with ``lora`` (it trains LoRA adapters) its ``lora_defaults``
    replace the settings they name (a method without them has the same defaults either way)."""
    return {**method.defaults, **(lora_overrides(method) if lora else {})}


def lora_overrides(method) -> dict:
    """The settings a method takes instead of its defaults when it trains LoRA adapters."""
    return dict(getattr(method, "lora_defaults", {}))


class Cancelled(Exception):
    """The run was cancelled by the user (checked between steps)."""


@dataclass
class UnlearnContext:
    model: torch.nn.Module  # edited in place
    ref_model: Any  # the model before unlearning, frozen: a copy, or the LoRA-adapted model with its adapters off
    tok: Any  # a Hugging Face tokenizer
    forget: Sequence[QAItem]
    retain: Sequence[QAItem]
    calibration: Sequence[QAItem]  # non-members: the loss level an unlearned item should reach
    settings: dict
    seed: int = 0
    max_len: int = 96
    hierarchy: object = None
    targeted: set = field(default_factory=set)  # concept ids under the selection
    tags: dict = field(default_factory=dict)  # item id -> Tag
    progress: Callable[[str, float, str], None] = lambda p, f, m: None
    should_cancel: Callable[[], bool] = lambda: False
    tokens_seen: int = 0  # tokens of the update steps' training batches (for tokens/s)

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.device = model_device(self.model)  # every batch is built there
        self.forget_enc = [encode_qa(self.tok, it.question, it.answer_text, self.max_len) for it in self.forget]
        self.retain_enc = [encode_qa(self.tok, it.question, it.answer_text, self.max_len) for it in self.retain]
        self.calib_enc = [encode_qa(self.tok, it.question, it.answer_text, self.max_len) for it in self.calibration]
        self.target_loss = mean_answer_loss(self.model, self.tok, self.calib_enc) if self.calib_enc else None

    def retain_batch(self, n: int) -> list[Encoded]:
        if not self.retain_enc:
            return []
        return self.rng.sample(self.retain_enc, min(n, len(self.retain_enc)))

    def batch(self, encs: Sequence[Encoded]):
        return collate(encs, self.tok.pad_token_id, self.device)


# The harness-wide default of the MCQ-aware stopping condition (see StopRule), shared by every
# method so that the benchmark compares them under one rule.
STOP_MCQ_DEFAULT = True


class StopRule:
    """Common harness rule: stop when a loss-based membership attack can no longer tell the forget
    items from non-members (never trained on): the AUC of forget vs calibration non-member answer
    losses drops to ``stop_auc`` (0.5 = chance), i.e. the model looks as if it never saw them.
    With ``stop_mcq`` (the default) the forget items must also be answered no better than the
    calibration non-members, i.e. reach what a model never trained on them scores.
    The calibration non-members are disjoint from those the reported MIA AUC is measured on."""

    def __init__(
        self,
        ctx: UnlearnContext,
        check_every: int,
        max_steps: int,
        time_budget_s: float,
        stop_auc: float = 0.5,
        stop_mcq: bool = STOP_MCQ_DEFAULT,
    ):
        self.ctx, self.check_every, self.max_steps, self.budget = ctx, check_every, max_steps, time_budget_s
        self.stop_auc = stop_auc
        # A loss-level match alone can leave a few items whose correct option still ranks first.
        self.stop_mcq = stop_mcq
        self.last_forget_correct: list[bool] | None = None
        self.last_forget_acc: float | None = None
        self.last_calib_acc: float | None = None
        self.t0 = time.time()
        self.last_forget_loss = mean_answer_loss(ctx.model, ctx.tok, ctx.forget_enc)
        self.last_auc: float | None = None
        self.last_forget_losses: list[float] | None = None  # per forget item, at the last check
        self.last_calib_losses: list[float] | None = None
        self.reason = "max_steps"
        self.check_seconds = 0.0  # wall time spent in ``done`` (the cancel poll and the checks), summed

    def done(self, step: int) -> bool:
        t = time.perf_counter()
        try:
            return self._done(step)
        finally:
            self.check_seconds += time.perf_counter() - t

    def _done(self, step: int) -> bool:
        if self.ctx.should_cancel():
            raise Cancelled()
        if step >= self.max_steps:
            self.reason = "max_steps"
            return True
        if time.time() - self.t0 > self.budget:
            self.reason = "time_budget"
            return True
        if step % self.check_every == 0 and self.check(step):
            self.reason = "reached_target"
            return True
        return False

    def check(self, step: int) -> bool:
        """Measure the forget and calibration items now; True when the target is reached."""
        f_losses = item_answer_losses(self.ctx.model, self.ctx.tok, self.ctx.forget_enc)
        self.last_forget_loss = sum(f_losses) / max(len(f_losses), 1)
        self.last_forget_losses = f_losses
        if self.ctx.calib_enc:
            c_losses = item_answer_losses(self.ctx.model, self.ctx.tok, self.ctx.calib_enc)
            self.last_calib_losses = c_losses
            self.last_auc = mia_auc_loss(f_losses, c_losses)
        mcq_ok = True
        if self.stop_mcq and self.ctx.calibration:
            fc = [
                r["correct"] for r in score_mcq(self.ctx.model, self.ctx.tok, self.ctx.forget, max_len=self.ctx.max_len)
            ]
            cc = [
                r["correct"]
                for r in score_mcq(self.ctx.model, self.ctx.tok, self.ctx.calibration, max_len=self.ctx.max_len)
            ]
            self.last_forget_correct = fc
            self.last_forget_acc = sum(fc) / max(len(fc), 1)
            self.last_calib_acc = sum(cc) / max(len(cc), 1)
            mcq_ok = self.last_forget_acc <= self.last_calib_acc
        mcq_msg = (
            ""
            if self.last_forget_acc is None
            else f" forget MCQ acc {self.last_forget_acc:.3f} (non-members {self.last_calib_acc:.3f})"
        )
        self.ctx.progress(
            "unlearn",
            min(1.0, step / self.max_steps),
            f"step {step} forget loss {self.last_forget_loss:.3f} "
            f"calibration MIA AUC {self.last_auc if self.last_auc is None else round(self.last_auc, 3)}" + mcq_msg,
        )
        return self.last_auc is not None and self.last_auc <= self.stop_auc and mcq_ok


def step_seconds(loop_seconds: float, check_seconds: float, steps: int) -> float | None:
    """Mean wall time of one update step: the loop's time less the stop rule's (None: no step)."""
    return (loop_seconds - check_seconds) / steps if steps > 0 else None


def full_param_loop(ctx: UnlearnContext, loss_fn, s: dict, masks: dict[str, torch.Tensor] | None = None) -> dict:
    """Adam until the stop rule fires (shared by the baselines): over all parameters, or with
    ``masks`` ({param name: bool mask}) over the masked tensors only, their gradient zeroed
    outside the mask before clipping. Adam (no weight decay) turns a gradient that is always 0
    into a step of exactly 0, so only masked weights change. Over several processes (distributed.py)
    the gradients are summed after each backward pass: ``loss_fn`` must return this process's
    share of the batch's loss (``share_of_batch``)."""
    torch.manual_seed(ctx.seed)
    named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
    # Unmasked tensors take no gradient during the loop (cheaper backward passes), as in HDSU.
    frozen = [p for n, p in named if masks is not None and n not in masks]
    named = [(n, p) for n, p in named if masks is None or n in masks]
    _set_requires_grad(frozen, False)
    params = [p for _, p in named]
    opt = torch.optim.Adam(params, lr=s["lr"])
    stop = StopRule(ctx, s["check_every"], s["max_steps"], s["time_budget_s"], s["stop_auc"], s["stop_mcq"])
    ctx.model.train()
    step, t_loop = 0, time.perf_counter()
    try:
        while not stop.done(step):
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.all_sum_grads_(params)  # several processes: each loss is its share of the batch mean
            if masks is not None:
                for n, p in named:
                    if p.grad is not None:
                        p.grad.masked_fill_(~masks[n], 0.0)
            torch.nn.utils.clip_grad_norm_(params, s.get("clip", 1.0))
            opt.step()
            step += 1
    finally:
        _set_requires_grad(frozen, True)
    loop_seconds = time.perf_counter() - t_loop
    ctx.model.eval()
    return {
        "steps": step,
        "stopped": stop.reason,
        "forget_loss": stop.last_forget_loss,
        "target_loss": ctx.target_loss,
        "calibration_auc": stop.last_auc,
        "step_seconds": step_seconds(loop_seconds, stop.check_seconds, step),
        "step_tokens": ctx.tokens_seen / step if step else None,
        "processes": distributed.world(),
    }


def _set_requires_grad(params: list[torch.nn.Parameter], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def forget_retain_objective(ctx: UnlearnContext, s: dict, forget_term, retain_weight: float):
    """The baselines' loss per call: ``forget_term(ids, att, labels)`` on a fresh forget batch of
    ``forget_batch`` items plus ``retain_weight`` x the mean answer NLL of a retain batch."""

    def loss():
        fb = ctx.rng.sample(ctx.forget_enc, min(s["forget_batch"], len(ctx.forget_enc)))
        rb = ctx.retain_batch(s["retain_batch"])
        ctx.tokens_seen += sum(len(e.ids) for e in fb + rb)
        out = share_of_batch(ctx, fb, forget_term)
        if rb:
            out = out + retain_weight * share_of_batch(
                ctx, rb, lambda i, a, lab: answer_nll(ctx.model, i, a, lab).mean()
            )
        return out

    return loss


def share_of_batch(ctx: UnlearnContext, encs: list[Encoded], term) -> torch.Tensor:
    """``term`` (a mean over the items of a batch) on this process's rows of ``encs``, scaled to
    its share of the whole batch's mean (distributed.py); the whole batch in one process."""
    if not distributed.splits_data():
        return term(*ctx.batch(encs))
    mine = distributed.shard(encs)
    if not mine:  # more processes than items: a zero that still has a graph
        return torch.stack([p.sum() for p in ctx.model.parameters() if p.requires_grad]).sum() * 0.0
    return term(*ctx.batch(mine)) * (len(mine) / len(encs))


BASELINE_DEFAULTS = {
    "lr": 5e-4,
    "max_steps": 300,
    "check_every": 5,
    "time_budget_s": 900.0,
    "stop_auc": 0.5,
    "stop_mcq": STOP_MCQ_DEFAULT,
    "retain_batch": 32,
    "forget_batch": 32,
}
# The type and range of each baseline setting (methods/schema.py; checked before a run starts).
BASELINE_SCHEMA = {
    "lr": schema.POSITIVE,
    "max_steps": schema.count(),
    "check_every": schema.count(),
    "time_budget_s": schema.POSITIVE,
    "stop_auc": schema.FRACTION,
    "stop_mcq": schema.FLAG,
    "retain_batch": schema.count(),
    "forget_batch": schema.count(),
}
