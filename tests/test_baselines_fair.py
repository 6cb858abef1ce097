"""Fair-comparison baselines on the toy model (tests/test_methods.py): GradDiff and NPO restricted
to HDSU's own mask (only masked weights move; the mask is the one HDSU selects), SimNPO's loss
against open-unlearning's formula, the per-step timing every method reports, and the bench's
time-ratio lines."""

from __future__ import annotations

import copy
import random
import re

import pytest
import torch
import torch.nn.functional as F
from test_app import app, home  # noqa: F401  (AppTest of a page, fresh HDSU_HOME)
from test_methods import TINY, toy  # noqa: F401  (module-scoped toy data set and recipe)

from hdsu_core import bench
from hdsu_core.cli import main
from hdsu_core.cli_engine import BENCH_METHODS
from hdsu_core.engine import RunConfig, calibration_split, prepare_model, run_unlearning
from hdsu_core.losses import answer_nll, simnpo_loss
from hdsu_core.methods import UnlearnContext, available, get_method, masked_baselines
from hdsu_core.methods.hdsu.method import prepare
from hdsu_core.methods.hdsu.settings import DEFAULTS as HDSU_DEFAULTS
from hdsu_core.methods.hdsu.shared_mask import hdsu_mask, trainable
from hdsu_core.methods.simnpo import SimNPO, simnpo_objective
from hdsu_core.metrics import changed_fraction
from hdsu_core.models import clone_model
from hdsu_core.store import Store
from hdsu_core.tagging import make_split

NEW = ["grad_diff_masked", "npo_masked", "simnpo"]
SMALL = {"max_steps": 5, "check_every": 5}
# HDSU with a cheaper Fisher and no repair / settle: the tests time steps, not HDSU's quality.
HDSU_FAST = {"fisher_retain_items": 64, "fisher_forget_items": 16, "repair_steps": 0, "settle_steps": 0}


@pytest.fixture(scope="module")
def toy_ctx(toy):  # noqa: F811
    """make(settings) -> a fresh UnlearnContext (seed 0) on a fresh copy of the toy model."""
    cfg = toy["cfg"]
    bundle = prepare_model(cfg, toy["items"], lambda *a: None)
    split = make_split(toy["items"], toy["hierarchy"], ["anxiety"], seed=0, holdout_fraction=cfg.holdout_fraction)
    calibration, _ = calibration_split(split.holdout, 0)

    def make(settings: dict) -> UnlearnContext:
        model = copy.deepcopy(bundle.model)
        ref = clone_model(model)
        for p in ref.parameters():
            p.requires_grad_(False)
        return UnlearnContext(
            model=model,
            ref_model=ref,
            tok=bundle.tokenizer,
            forget=split.forget,
            retain=split.retain,
            calibration=calibration,
            settings=dict(settings),
            hierarchy=toy["hierarchy"],
            targeted=split.targeted,
            tags=split.tags,
        )

    return make


def test_new_methods_are_registered_and_benched_by_default():
    assert set(NEW) <= set(available())
    assert BENCH_METHODS.split(",") == ["hdsu", "grad_ascent", "grad_diff", "npo", *NEW]
    for m in ("grad_diff_masked", "npo_masked"):
        d = get_method(m).defaults
        assert d["mask_fraction"] == HDSU_DEFAULTS["mask_fraction"] == 0.001
        assert d["mask_allocation"] == HDSU_DEFAULTS["mask_allocation"]
    assert get_method("npo_masked").defaults["beta"] == get_method("npo").defaults["beta"]


def test_adam_with_zero_gradient_leaves_a_weight_exactly_unchanged():
    """What the masked baselines rely on: no weight decay, a gradient that is always 0 -> no step."""
    torch.manual_seed(0)
    keep = torch.rand(64) < 0.25
    for weight_decay, frozen_move in ((0.0, False), (0.01, True)):
        w = torch.nn.Parameter(torch.randn(64))
        before = w.detach().clone()
        opt = torch.optim.Adam([w], lr=0.1, weight_decay=weight_decay)
        for _ in range(20):
            opt.zero_grad(set_to_none=True)
            (w**3).sum().backward()
            assert w.grad is not None
            w.grad.masked_fill_(~keep, 0.0)
            opt.step()
        assert (w.detach()[keep] != before[keep]).all()
        assert bool((w.detach()[~keep] != before[~keep]).any()) == frozen_move


def _hdsu_own_mask(ctx: UnlearnContext, settings: dict) -> dict[str, torch.Tensor]:
    """The mask HDSU itself selects (its ``prepare``) on this context."""
    st = prepare(ctx, {**HDSU_DEFAULTS, **settings}, trainable(ctx.model))
    return {n: m for n, _, m in st.weights.masked}


@pytest.mark.parametrize("method", ["grad_diff_masked", "npo_masked"])
def test_masked_baseline_moves_only_hdsus_mask(toy_ctx, monkeypatch, method):
    settings = {**SMALL, "mask_fraction": 0.002, "fisher_retain_items": 64}  # mask settings reach the mask
    used = {}

    def spy(ctx, s):
        used["mask"] = hdsu_mask(ctx, s)
        return used["mask"]

    monkeypatch.setattr(masked_baselines, "hdsu_mask", spy)
    ctx = toy_ctx(settings)
    before = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
    info = get_method(method).run(ctx)
    changed, total = changed_fraction(before, ctx.model.state_dict())
    own = _hdsu_own_mask(toy_ctx(settings), settings)  # a fresh context: the same seed and settings
    assert used["mask"].keys() == own.keys() and all(torch.equal(used["mask"][n], own[n]) for n in own)
    assert info["mask_size"] == sum(int(m.sum()) for m in own.values()) == int(0.002 * total)
    assert info["mask_fraction"] == info["mask_size"] / total
    for n, p in ctx.model.named_parameters():
        moved = before[n] != p.detach()
        assert not (moved & ~own.get(n, torch.zeros_like(moved))).any(), n
    assert 0 < changed <= info["mask_size"]
    assert info["steps"] == 5 and info["step_seconds"] > 0
    assert all(p.requires_grad for p in ctx.model.parameters())  # the unmasked tensors are trainable again


@pytest.mark.parametrize("method", NEW)
def test_new_methods_run_in_the_harness(toy, method):  # noqa: F811
    r = run_unlearning(RunConfig(**{**toy["cfg"].to_dict(), "method": method, "settings": {"max_steps": 10}}))
    info = r["info"]
    assert info["steps"] > 0 and info["step_seconds"] > 0
    assert r["forget_acc_after"] <= r["forget_acc_before"]
    if method == "simnpo":
        assert r["changed_fraction"] > 0.01  # all parameters
    else:
        assert 0 < r["changed_weights"] <= info["mask_size"] == int(0.001 * r["total_weights"])
        assert r["changed_fraction"] <= 0.001


@pytest.mark.parametrize("method", ["hdsu", "grad_ascent", "grad_diff", "npo"])
def test_every_method_reports_its_step_time(toy_ctx, method):
    info = get_method(method).run(toy_ctx({**SMALL, **(HDSU_FAST if method == "hdsu" else {})}))
    assert info["steps"] > 0 and info["step_seconds"] > 0


def test_simnpo_loss_is_open_unlearnings(toy_ctx):
    """open-unlearning src/trainer/unlearn/simnpo.py (with trainer/utils.compute_batch_nll),
    computed here from the full logits."""
    ctx = toy_ctx({})
    ids, att, labels = ctx.batch(ctx.forget_enc[:6])
    for beta, delta in ((4.5, 0.0), (2.0, 0.3)):
        logits = ctx.model(input_ids=ids, attention_mask=att).logits[..., :-1, :]
        nll_sum = torch.nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(
            logits.transpose(-1, -2), labels[..., 1:]
        ).sum(-1)
        forget_loss = nll_sum / (labels != -100).sum(-1) - delta
        expected = -F.logsigmoid(beta * forget_loss).mean() * 2 / beta
        assert torch.allclose(simnpo_loss(ctx.model, ids, att, labels, beta, delta), expected, atol=1e-5)


def test_simnpo_objective_weights_like_open_unlearning(toy_ctx):
    """configs/trainer/SimNPO.yaml: beta 4.5, gamma 0.125 on the forget loss, alpha 1 on the
    retain NLL, delta 0."""
    d = SimNPO.defaults
    assert (d["beta"], d["gamma"], d["alpha"], d["delta"]) == (4.5, 0.125, 1.0, 0.0)
    ctx = toy_ctx({})
    s = {**d, "forget_batch": 4, "retain_batch": 4}
    ctx.rng = random.Random(3)
    got = simnpo_objective(ctx, s)()
    ctx.rng = random.Random(3)
    f = ctx.batch(ctx.rng.sample(ctx.forget_enc, 4))
    r = ctx.batch(ctx.rng.sample(ctx.retain_enc, 4))
    expected = 0.125 * simnpo_loss(ctx.model, *f, 4.5, 0.0) + answer_nll(ctx.model, *r).mean()
    assert torch.allclose(got, expected, atol=1e-6)


def test_time_ratio_lines():
    rows = [
        {"dataset": "demo", "method": "retrain", "unlearn_seconds": None, "step_seconds": None},
        {"dataset": "demo", "method": "hdsu", "unlearn_seconds": 30.0, "step_seconds": 0.05},
        {"dataset": "demo", "method": "grad_diff", "unlearn_seconds": 12.0, "step_seconds": 0.1},
        {"dataset": "demo", "method": "npo_masked", "unlearn_seconds": 20.0, "step_seconds": None},
        {"dataset": "other", "method": "hdsu", "unlearn_seconds": 1.0, "step_seconds": 0.01},
    ]
    assert bench.format_time_ratios(rows).splitlines() == [
        "hdsu / grad_diff: run time 2.50×, one step 0.50× (demo)",
        "hdsu / npo_masked: run time 1.50×, one step - (demo)",
    ]
    assert bench.format_time_ratios(rows[:2]) == ""


def test_bench_prints_the_ratios_of_the_same_run(toy, tmp_path, monkeypatch, capsys):  # noqa: F811
    """``bench --methods hdsu,grad_diff`` on the toy set (its tiny recipe, 5 steps): the ratio
    line under the table is computed from the two rows of this run."""

    def toy_config(**kw):
        fast = HDSU_FAST if kw.get("method") == "hdsu" else {}  # bench also builds a bare config to check options
        settings = {**kw.get("settings", {}), **SMALL, **fast}
        return RunConfig(**{**kw, "recipe": TINY, "n_generations": 2, "settings": settings})

    monkeypatch.setattr(bench, "RunConfig", toy_config)
    db = tmp_path / "b.duckdb"
    argv = ["bench", "--dataset", toy["cfg"].dataset, "--forget", "anxiety", "--methods", "hdsu,grad_diff"]
    assert main([*argv, "--no-retrain", "--db", str(db), "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = {r["method"]: r["metrics"] for r in Store(db).bench_results().to_dict("records")}
    assert rows.keys() == {"hdsu", "grad_diff"}
    assert all(r["step_seconds"] > 0 and r["unlearn_seconds"] > 0 for r in rows.values())
    m = re.search(r"^hdsu / grad_diff: run time (\d+\.\d\d)×, one step (\d+\.\d\d)× \(demo:", out, re.M)
    assert m, out
    assert out.index("forget_b") < m.start()  # under the table
    h, g = rows["hdsu"], rows["grad_diff"]
    assert float(m[1]) == pytest.approx(h["unlearn_seconds"] / g["unlearn_seconds"], abs=0.006)
    assert float(m[2]) == pytest.approx(h["step_seconds"] / g["step_seconds"], abs=0.006)
    for method, r in rows.items():  # the step-time lines of `bench --device cuda`, printed on the CPU too
        t = re.search(rf"^{method}: one step (\d+\.\d) ms, (\d+) tokens/step, ([\d,]+) tokens/s \(cpu", out, re.M)
        assert t, out
        assert float(t[1]) == pytest.approx(r["step_seconds"] * 1000, abs=0.06)
        assert int(t[3].replace(",", "")) == pytest.approx(int(t[2]) / r["step_seconds"], rel=0.01)


@pytest.mark.parametrize("method", NEW)
def test_unlearn_page_offers_the_new_methods(home, method):  # noqa: F811
    at = app("unlearn", {"forget_selection": ["anxiety"]})
    at.selectbox(key="method").set_value(method).run()
    assert not at.exception, [e.value for e in at.exception]
    defaults = get_method(method).defaults
    shown = {ni.key.removeprefix(f"set_{method}_"): ni.value for ni in at.number_input if ni.key.startswith("set_")}
    assert shown and all(v == defaults[k] for k, v in shown.items())
