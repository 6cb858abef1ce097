"""The one explicit state an HDSU run carries through its phases (mask selection, push loop,
retain repair, settle)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hdsu_core.losses import item_answer_losses
from hdsu_core.methods.base import StopRule, UnlearnContext
from hdsu_core.methods.hdsu.geometry import MaskedWeights
from hdsu_core.methods.hdsu.roles import ForgetBatch


class AtRiskRetain:
    """Opt-in (``hold_at_risk`` > 0): at every check, the retain items (a fixed seeded sample of at
    most ``at_risk_pool``) whose answer loss rose more than ``at_risk_margin`` nats above the
    original model's join every hold batch (at most ``hold_at_risk`` of them, largest rise first);
    the rest of the batch is sampled as before. The push damages a few retained items that share
    a question template with forget items, and a random hold batch sees each of them only now and
    then."""

    def __init__(self, ctx: UnlearnContext, s: dict):
        self.ctx, self.s = ctx, s
        self.pool = (
            ctx.rng.sample(ctx.retain_enc, min(s["at_risk_pool"], len(ctx.retain_enc))) if s["hold_at_risk"] > 0 else []
        )
        self.pool_ref = torch.tensor(item_answer_losses(ctx.ref_model, ctx.tok, self.pool)) if self.pool else None
        self.items: list = []
        self.last_batch: list = []  # the last hold batch drawn (its tokens are counted)
        self.seen_max = 0  # the most at-risk items held at once (reported)

    def refresh(self, model) -> None:
        if not self.pool or self.pool_ref is None:
            return
        rise = torch.tensor(item_answer_losses(model, self.ctx.tok, self.pool)) - self.pool_ref
        order = torch.argsort(rise, descending=True)[: self.s["hold_at_risk"]]
        self.items = [self.pool[int(i)] for i in order if float(rise[i]) > self.s["at_risk_margin"]]
        self.seen_max = max(self.seen_max, len(self.items))

    def hold_batch(self) -> list:
        """The retain items of the next hold loss: the at-risk ones plus a random batch."""
        if not self.items:
            self.last_batch = self.ctx.retain_batch(self.s["retain_batch"])
        else:
            self.last_batch = self.items + self.ctx.retain_batch(max(0, self.s["retain_batch"] - len(self.items)))
        return self.last_batch


@dataclass
class PushStats:
    """Per push step: cos(g_f, g_r) and the share of the push the projection removed (reported as
    means over the run and over its first and last ten steps, to see whether the conflict grows)."""

    cos: list[float] = field(default_factory=list)
    removed: list[float] = field(default_factory=list)

    def add(self, cos: float, removed: float) -> None:
        self.cos.append(cos)
        self.removed.append(removed)

    def summary(self) -> dict[str, float | None]:
        def mean(xs: list[float]) -> float | None:
            return round(sum(xs) / len(xs), 4) if xs else None

        return {
            "push_cos_mean": mean(self.cos),
            "push_cos_first10": mean(self.cos[:10]),
            "push_cos_last10": mean(self.cos[-10:]),
            "projection_removed_mean": mean(self.removed),
        }


@dataclass
class HDSUState:
    ctx: UnlearnContext
    s: dict  # the run's settings (defaults + overrides)
    forget: ForgetBatch
    weights: MaskedWeights
    k: int  # mask size
    total: int  # all weights of the model
    lp_ref: torch.Tensor  # the original model's token log-probs on the forget batch (B, T-1)
    at_risk: AtRiskRetain
    stop: StopRule
    focus: torch.Tensor  # per forget item: 1 = still pushed, forgotten_weight = forgotten already
    need_kl: bool  # the KL hold has a weight and preserve tokens to hold
    step: int = 0
    conflicts: int = 0  # push steps whose forget and hold gradients conflicted
    step_norm: float = 0.0  # current (damped) norm of a push step
    last_side: bool | None = None  # calibration AUC above stop_auc at the last check
    info: dict = field(default_factory=lambda: {"repair_steps": 0})  # what repair / settle report
    push_stats: PushStats = field(default_factory=PushStats)
    tokens_seen: int = 0  # tokens of the push steps' forward passes (forget + hold batches), for tokens/s

    @property
    def model(self) -> torch.nn.Module:
        return self.ctx.model
