"""Update geometry on the masked weights: projection of conflicting gradients, Gram-Schmidt
guards, and the bounded step.

Per step, on the masked coordinates: g_f = grad of the push loss, g_r = grad of the hold loss; if
<g_f, g_r> < 0 (descending g_f would raise the retain loss) the conflicting component is removed,
g_f' = g_f - (<g_f,g_r>/|g_r|^2) g_r; the direction d = g_f' + alpha g_r has <d, g_r> >= 0, so the
step theta -= eta d never raises the hold loss to first order. Every step has L2 norm ``step_norm``
(halved, down to ``min_step_share`` of it, each time the calibration AUC crosses ``stop_auc``).
"""

from __future__ import annotations

import torch


def project_conflicting(g_f: torch.Tensor, g_r: torch.Tensor) -> torch.Tensor:
    """Remove from g_f its component against g_r when they conflict (<g_f, g_r> < 0).
    Afterwards <g, g_r> >= 0: a descent step along -g does not increase the retain loss to first order."""
    dot = torch.dot(g_f, g_r)
    nr = torch.dot(g_r, g_r)
    if dot < 0 and nr > 0:
        return g_f - (dot / nr) * g_r
    return g_f


def project_out(g: torch.Tensor, directions: list[torch.Tensor]) -> torch.Tensor:
    """g without its components in the span of ``directions`` (Gram-Schmidt): afterwards
    <g, v> = 0 for every v, so a step along g leaves each of those losses unchanged to first order."""
    basis: list[torch.Tensor] = []
    for v in directions:
        for b in basis:
            v = v - torch.dot(v, b) * b
        if v.norm() > 0:
            basis.append(v / v.norm())
    for b in basis:
        g = g - torch.dot(g, b) * b
    return g


def update_direction(g_f: torch.Tensor, g_r: torch.Tensor, s: dict) -> tuple[torch.Tensor, bool]:
    """The step direction d = g_f' + alpha g_r (g_f' = g_f projected when ``projection``), and
    whether the two gradients conflicted (<g_f, g_r> < 0; only counted with the projection on)."""
    if s["projection"]:
        conflict = bool(torch.dot(g_f, g_r) < 0)
        return project_conflicting(g_f, g_r) + s["retain_weight"] * g_r, conflict
    return g_f + s["retain_weight"] * g_r, False


def conflict_stats(g_f: torch.Tensor, g_r: torch.Tensor) -> tuple[float, float]:
    """cos(g_f, g_r) and the share of |g_f| that ``project_conflicting`` removes (|<g_f,g_r>| /
    (|g_r| |g_f|) when they conflict, else 0): how much of the push the geometry gives away."""
    nf, nr = float(g_f.norm()), float(g_r.norm())
    if nf == 0 or nr == 0:
        return 0.0, 0.0
    cos = float(torch.dot(g_f, g_r)) / (nf * nr)
    return cos, max(0.0, -cos)


def damped_step_norm(step_norm: float, last_side: bool | None, auc: float | None, s: dict):
    """Rprop-style damping: each time the calibration AUC crossed ``stop_auc`` since the last
    check the run has overshot, so the step norm is multiplied by ``step_decay`` (not below
    ``min_step_share`` x ``step_norm``) and settles instead of swinging. Returns the new step norm
    and the AUC side (above the target or not) to compare with at the next check."""
    if auc is None:
        return step_norm, last_side
    side = auc > s["stop_auc"]
    if last_side is not None and side != last_side:
        step_norm = max(step_norm * s["step_decay"], s["step_norm"] * s["min_step_share"])
    return step_norm, side


class MaskedWeights:
    """The masked coordinates of the model's weights as one flat float32 vector: gradients,
    bounded steps, snapshots. Only these weights ever change."""

    def __init__(self, masked: list[tuple[str, torch.nn.Parameter, torch.Tensor]]):
        self.masked = masked  # (name, parameter, bool mask) for every tensor with masked weights
        self.params = [p for _, p, _ in masked]

    def flat(self, grads) -> torch.Tensor:
        """float32: projections and norms need the precision."""
        return torch.cat(
            [
                (g[m].float() if g is not None else torch.zeros(int(m.sum()), device=m.device))
                for g, (_, _, m) in zip(grads, self.masked)
            ]
        )

    def grad(self, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d loss / d masked weights, flat."""
        return self.flat(torch.autograd.grad(loss, self.params, retain_graph=retain_graph, allow_unused=True))

    def apply(self, g: torch.Tensor, norm_to: float) -> bool:
        """Step the masked weights by -g scaled to norm ``norm_to``; False (and no step) when the
        direction vanished or is not finite."""
        norm = g.norm()
        if norm == 0 or not torch.isfinite(norm):
            return False
        upd = g * (norm_to / norm)
        with torch.no_grad():
            off = 0
            for _, p, m in self.masked:
                c = int(m.sum())
                p[m] -= upd[off : off + c].to(p.dtype)
                off += c
        return True

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def restore(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state):
                p.copy_(saved)
