"""HDSU's phases on their own (methods/hdsu/): the bounded step on the masked weights, the damped
step norm, the update direction, the top-k mask, item focus and over-forgotten selection. Pure
tensors or a tiny hand-made state: fast, no trained model needed."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from hdsu_core.methods.hdsu.geometry import (
    MaskedWeights,
    conflict_stats,
    damped_step_norm,
    project_conflicting,
    update_direction,
)
from hdsu_core.methods.hdsu.mask import split_by_param, top_k_mask
from hdsu_core.methods.hdsu.push import forget_rows, refresh_focus
from hdsu_core.methods.hdsu.settings import DEFAULTS
from hdsu_core.methods.hdsu.settle import over_forgotten


def _masked_pair():
    a = torch.nn.Parameter(torch.zeros(3, 4))
    b = torch.nn.Parameter(torch.zeros(5))
    ma = torch.zeros(3, 4, dtype=torch.bool)
    ma[0, 1] = ma[2, 3] = True
    mb = torch.tensor([True, False, False, True, True])
    return a, b, MaskedWeights([("a", a, ma), ("b", b, mb)])


def test_bounded_step_moves_only_masked_weights_by_exactly_the_norm():
    a, b, w = _masked_pair()
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])  # 2 masked in a, 3 in b
    assert w.apply(g, 0.5)
    moved = torch.cat([a.detach().flatten(), b.detach().flatten()])
    assert int((moved != 0).sum()) == 5  # exactly the masked coordinates
    assert torch.isclose(moved.norm(), torch.tensor(0.5))
    assert torch.allclose(a.detach()[0, 1] / a.detach()[2, 3], torch.tensor(0.5))  # direction kept
    assert not w.apply(torch.zeros(5), 0.5) and not w.apply(torch.full((5,), float("nan")), 0.5)


def test_snapshot_restore_round_trip():
    a, b, w = _masked_pair()
    saved = w.snapshot()
    w.apply(torch.ones(5), 1.0)
    assert a.detach().abs().sum() > 0
    w.restore(saved)
    assert a.detach().abs().sum() == 0 and b.detach().abs().sum() == 0


def test_masked_gradient_is_flat_over_masked_coordinates():
    a, b, w = _masked_pair()
    loss = (a * torch.arange(12.0).view(3, 4)).sum() + (b * 10).sum()
    assert torch.equal(w.grad(loss), torch.tensor([1.0, 11.0, 10.0, 10.0, 10.0]))


def test_damped_step_halves_on_each_crossing_down_to_the_floor():
    s = dict(DEFAULTS)
    norm, side = damped_step_norm(3.0, None, None, s)  # no check yet: unchanged
    assert (norm, side) == (3.0, None)
    norm, side = damped_step_norm(norm, side, 0.9, s)  # first check above target: no crossing yet
    assert (norm, side) == (3.0, True)
    norm, side = damped_step_norm(norm, side, 0.4, s)  # crossed
    assert (norm, side) == (1.5, False)
    norm, side = damped_step_norm(norm, side, 0.45, s)  # same side
    assert norm == 1.5
    for auc in (0.6, 0.4, 0.6, 0.4, 0.6):
        norm, side = damped_step_norm(norm, side, auc, s)
    assert norm == pytest.approx(s["step_norm"] * s["min_step_share"])


def test_update_direction_never_opposes_the_hold_gradient():
    g = torch.Generator().manual_seed(0)
    s = dict(DEFAULTS)
    conflicts = 0
    for _ in range(100):
        g_f, g_r = torch.randn(30, generator=g), torch.randn(30, generator=g)
        d, conflict = update_direction(g_f, g_r, s)
        conflicts += conflict
        assert conflict == bool(torch.dot(g_f, g_r) < 0)
        assert float(torch.dot(d, g_r)) >= -1e-5
    assert 0 < conflicts < 100
    d, conflict = update_direction(g_f, g_r, {**s, "projection": False})
    assert torch.allclose(d, g_f + s["retain_weight"] * g_r) and not conflict


def test_top_k_mask_keeps_each_items_own_weights_then_pooled_best():
    scores = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.3, 0.7])
    mask = top_k_mask(scores.clone(), {0, 3}, 4, 6)
    assert int(mask.sum()) == 4 and mask[0] and mask[3] and mask[1] and mask[2]
    trimmed = top_k_mask(scores.clone(), {0, 3, 4}, 2, 6)  # union over budget: best pooled of it
    assert trimmed.nonzero().flatten().tolist() == [3, 4]
    assert top_k_mask(scores.clone(), set(), 2, 6).nonzero().flatten().tolist() == [1, 2]
    params = [("x", torch.zeros(2, 2)), ("y", torch.zeros(2))]
    masks = split_by_param(torch.tensor([False, True, False, False, False, False]), params)
    assert list(masks) == ["x"] and masks["x"].shape == (2, 2)


def _state(forget_losses, calib_losses, correct, **settings):
    stop = SimpleNamespace(
        last_forget_losses=forget_losses, last_calib_losses=calib_losses, last_forget_correct=correct
    )
    ctx = SimpleNamespace(forget_enc=[f"e{i}" for i in range(len(forget_losses))], device="cpu")
    return SimpleNamespace(
        stop=stop, ctx=ctx, s={**DEFAULTS, **settings}, focus=torch.ones(len(forget_losses)), forget=None
    )


def test_item_focus_stops_pushing_forgotten_items_only():
    st = _state([5.0, 1.0, 6.0, 9.0], [2.0, 3.0, 4.0], [False, False, True, False])
    refresh_focus(st)
    # past the non-member median (3.0) and answered wrongly -> forgotten_weight (0)
    assert st.focus.tolist() == [0.0, 1.0, 1.0, 0.0]
    off = _state([5.0, 1.0], [2.0, 3.0], [False, False], forgotten_weight=1.0)
    refresh_focus(off)
    assert off.focus.tolist() == [1.0, 1.0]


def test_over_forgotten_are_above_the_non_member_median():
    st = _state([5.0, 1.0, 6.0, 2.5], [2.0, 3.0, 4.0], None)
    assert over_forgotten(st) == ["e0", "e2"]


def test_forget_rows_all_when_few_seeded_sample_when_many():
    st = SimpleNamespace(
        ctx=SimpleNamespace(rng=random.Random(0), device="cpu"),
        forget=SimpleNamespace(ids=torch.zeros(10, 3)),
        s={**DEFAULTS, "forget_batch": 64},
    )
    assert forget_rows(st).tolist() == list(range(10))
    st.s["forget_batch"] = 4
    rows = forget_rows(st).tolist()
    assert len(rows) == 4 and rows == sorted(rows) and len(set(rows)) == 4
    st.ctx.rng = random.Random(0)
    assert forget_rows(st).tolist() == rows  # seeded


def test_conflict_stats_measure_what_the_projection_removes():
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        g_f, g_r = torch.randn(20, generator=g), torch.randn(20, generator=g)
        cos, removed = conflict_stats(g_f, g_r)
        assert cos == pytest.approx(float(torch.nn.functional.cosine_similarity(g_f, g_r, dim=0)), abs=1e-5)
        taken = float((g_f - project_conflicting(g_f, g_r)).norm() / g_f.norm())
        assert removed == pytest.approx(taken, abs=1e-5)  # 0 when they do not conflict
    assert conflict_stats(torch.zeros(3), torch.ones(3)) == (0.0, 0.0)
