"""Unlearning engine on a tiny memorised toy set (a slice of the demo KB, a 64-wide one-layer
Llama trained in seconds): real forgetting, exact mask bound, projection, token roles, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from hdsu_core import datasets
from hdsu_core.demo_kb import write_jsonl
from hdsu_core.encoding import encode_qa
from hdsu_core.engine import RunConfig, prepare_model, run_unlearning
from hdsu_core.hierarchy import load_default
from hdsu_core.methods import available, get_method
from hdsu_core.methods.hdsu.geometry import project_conflicting
from hdsu_core.methods.hdsu.roles import role_weights, token_roles
from hdsu_core.metrics import auc, changed_fraction, mia_resistance
from hdsu_core.tagging import TermIndex, make_split

TOY_CONCEPTS_PREFIX = ("anxiety", "depression", "surgery")
TINY = {
    "hidden": 64,
    "layers": 1,
    "heads": 2,
    "intermediate": 128,
    "vocab": 4000,
    "lr": 5e-3,
    "batch": 16,
    "max_epochs": 200,
    "target_acc": 1.0,
    "eval_every": 10,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """~110 demo items (anxiety, depression and part of surgery) as a demo-format JSONL file."""
    home = tmp_path_factory.mktemp("home")
    h = load_default()
    under = set()
    for c in ("anxiety", "depression"):
        under |= h.subtree(c)
    surg = sorted(h.subtree("surgery"))[:12]
    items = [
        it for it in datasets.load("demo").items if it.labels["concept_id"] in under or it.labels["concept_id"] in surg
    ]
    path = home / "toy.jsonl"
    write_jsonl(items, path)
    cfg = RunConfig(
        forget=["anxiety"], dataset=f"demo:{path}", recipe=TINY, settings={"max_steps": 20}, n_generations=2
    )
    return {"cfg": cfg, "items": items, "path": path, "hierarchy": h}


def test_registry_has_all_methods():
    assert {"hdsu", "grad_ascent", "grad_diff", "npo"} <= set(available())
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")


def test_toy_model_memorises(toy):
    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    assert b.meta["train_acc"] >= 0.95


@pytest.fixture(scope="module")
def demo_result():
    """One hdsu run on the embedded demo model (built once and cached under var/models)."""
    return run_unlearning(RunConfig(forget=["anxiety"], n_generations=2))


def test_hdsu_forgets_keeps_retain_and_bounds_mask(demo_result):
    r = demo_result
    assert r["forget_acc_before"] >= 0.95
    assert r["forget_acc_after"] <= 0.5, r
    assert r["retain_acc_after"] >= r["retain_acc_before"] - 0.04, r
    # Changed weights are counted from the actual diff and never exceed the mask.
    info = r["info"]
    assert 0 < r["changed_weights"] <= info["mask_size"]
    assert info["mask_size"] == max(1, int(0.001 * r["total_weights"]))
    assert r["changed_fraction"] <= 0.001 + 1e-9
    assert r["mia_auc"] < r["mia_auc_before"]


def test_same_seed_same_numbers(toy):
    cfg = RunConfig(**{**toy["cfg"].to_dict(), "settings": {"max_steps": 15}})
    a = run_unlearning(cfg)
    b = run_unlearning(cfg)
    keys = ["forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights", "steps"]
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_mask_fraction_setting_is_exact(toy):
    cfg = RunConfig(**{**toy["cfg"].to_dict(), "settings": {"mask_fraction": 0.0002, "max_steps": 5}})
    r = run_unlearning(cfg)
    assert r["changed_weights"] <= r["info"]["mask_size"] == int(0.0002 * r["total_weights"])


@pytest.mark.parametrize("method", ["grad_ascent", "grad_diff", "npo"])
def test_baselines_run_in_the_same_harness(toy, method):
    cfg = RunConfig(**{**toy["cfg"].to_dict(), "method": method, "settings": {"max_steps": 15}})
    r = run_unlearning(cfg)
    assert r["forget_acc_after"] < r["forget_acc_before"]
    assert r["changed_fraction"] > 0.01  # baselines update every weight


def test_projection_never_raises_retain_loss_first_order():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        g_f = torch.randn(50, generator=g)
        g_r = torch.randn(50, generator=g)
        p = project_conflicting(g_f, g_r)
        # an update theta -= eta * p changes the retain loss by -eta <p, g_r> to first order
        assert torch.dot(p, g_r) >= -1e-5
        if torch.dot(g_f, g_r) >= 0:
            assert torch.equal(p, g_f)


def test_projection_on_real_gradients(toy):
    """With real forget/retain gradients of the toy model, a small projected step does not raise
    the retain loss beyond second-order effects."""
    from hdsu_core.encoding import collate
    from hdsu_core.losses import answer_nll

    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    model, tok = b.model, b.tokenizer
    h = toy["hierarchy"]
    sp = make_split(toy["items"], h, ["anxiety"])
    fe = [encode_qa(tok, it.question, it.answer_text) for it in sp.forget]
    re_ = [encode_qa(tok, it.question, it.answer_text) for it in sp.retain]
    params = [p for p in model.parameters()]

    def grad(encs, sign):
        model.zero_grad()
        ids, att, lab = collate(encs, tok.pad_token_id)
        (sign * answer_nll(model, ids, att, lab).mean()).backward()
        return torch.cat([p.grad.flatten() for p in params])

    def retain_loss():
        with torch.no_grad():
            ids, att, lab = collate(re_, tok.pad_token_id)
            return float(answer_nll(model, ids, att, lab).mean())

    g_f = grad(fe, -1.0)  # ascent on forget
    g_r = grad(re_, 1.0)
    d = project_conflicting(g_f, g_r)
    assert float(torch.dot(d, g_r)) >= -1e-4 * float(g_r.norm() * d.norm())
    before = retain_loss()
    eta = 1e-3 / float(d.norm())
    with torch.no_grad():
        off = 0
        for p in params:
            n = p.numel()
            p -= eta * d[off : off + n].view_as(p)
            off += n
    after = retain_loss()
    assert after - before <= 1e-4


def test_token_roles_follow_hierarchy(toy):
    h = toy["hierarchy"]
    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    tok = b.tokenizer
    targeted = h.subtree("anxiety")
    idx = TermIndex(h)
    q = "What is the first-line treatment for panic disorder with depression?"
    enc = encode_qa(tok, q, "Quiet blorp reassurance")
    roles = token_roles(enc, idx, targeted)
    text_of = lambda t: enc.text[enc.offsets[t][0] : enc.offsets[t][1]].strip().lower()  # noqa: E731
    by_text = {text_of(t): r for t, r in enumerate(roles) if text_of(t)}
    assert by_text["panic"] == "target"  # term of a targeted concept
    assert by_text["depression"] == "preserve"  # term of an unselected concept
    assert by_text["question"] == "template"
    assert all(r == "answer" for t, r in enumerate(roles) if t >= enc.answer_start)
    push, hold = role_weights(roles, concept_weight=0.2)
    for r, p, hw in zip(roles, push, hold):
        assert p == {"answer": 1.0, "target": 0.2, "preserve": 0.0, "template": 0.0}[r]
        assert hw == (1.0 if r == "preserve" else 0.0)


def test_metrics_plain_functions():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 2], [1, 2]) == 0.5
    assert mia_resistance(0.5) == 1.0 and mia_resistance(1.0) == 0.0
    a = {"w": torch.zeros(10), "b": torch.zeros(5)}
    b = {"w": torch.zeros(10), "b": torch.zeros(5)}
    b["w"][[1, 3, 7]] = 1.0
    assert changed_fraction(a, b) == (3, 15)
    assert math.isnan(auc([], [1.0]))


def test_per_item_mask_covers_every_forget_item(toy):
    """With ``mask_allocation=per_item`` the mask has exactly k weights and every forget item
    can move its own answer: its push gradient is non-zero somewhere inside the mask."""
    from hdsu_core.encoding import collate
    from hdsu_core.engine import calibration_split
    from hdsu_core.losses import token_npo_loss
    from hdsu_core.methods.base import UnlearnContext
    from hdsu_core.methods.hdsu import HDSU
    from hdsu_core.methods.hdsu.mask import select_mask
    from hdsu_core.models import clone_model

    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    model, tok = b.model, b.tokenizer
    sp = make_split(toy["items"], toy["hierarchy"], ["anxiety"])
    ref = clone_model(model)
    calib, _ = calibration_split(sp.holdout, 0)
    settings = {**HDSU.defaults, "mask_allocation": "per_item", "mask_fraction": 0.002}
    ctx = UnlearnContext(
        model=model, ref_model=ref, tok=tok, forget=sp.forget, retain=sp.retain, calibration=calib, settings=settings
    )
    ids, att, _ = collate(ctx.forget_enc, tok.pad_token_id)
    weights = (
        torch.arange(ids.shape[1]).unsqueeze(0) >= torch.tensor([e.answer_start for e in ctx.forget_enc]).unsqueeze(1)
    ).float() * att

    def push_loss(idx):
        return token_npo_loss(model, ref, ids[idx], att[idx], weights[idx], 0.2)

    params = [(n, p) for n, p in model.named_parameters()]
    masks, k, total = select_mask(ctx, model, params, push_loss, settings)
    assert k == int(0.002 * total) <= 0.002 * total  # rounded down: never over the budget
    assert sum(int(m.sum()) for m in masks.values()) == k
    for i in range(len(ctx.forget_enc)):
        model.zero_grad()
        push_loss(torch.tensor([i])).backward()
        inside = sum(float(p.grad[masks[n]].abs().sum()) for n, p in params if n in masks and p.grad is not None)
        assert inside > 0, f"forget item {i} has no weight of its own in the mask"
    with pytest.raises(ValueError, match="mask_allocation"):
        select_mask(ctx, model, params, push_loss, {**settings, "mask_allocation": "bogus"})


def test_mcq_stop_rule_reaches_non_member_accuracy(demo_result):
    """The default stopping rule on the demo model: a run that reports ``reached_target`` answers
    the forget items no better than the calibration non-members at its last check, and its
    calibration loss-attack AUC is at chance or below."""
    info = demo_result["info"]
    assert info["stopped"] == "reached_target", info
    assert info["stop_forget_mcq_acc"] <= info["stop_calib_mcq_acc"]
    # At chance or below, unless the settle step brought over-forgotten items back up to it.
    assert info["calibration_auc"] <= 0.5 or (info["settle_steps"] > 0 and not info["settle_reverted"]), info
    assert demo_result["forget_acc_after"] <= demo_result["holdout_acc_before"] + 0.1, demo_result


def test_mcq_stop_rule_keeps_going_while_items_are_answered(toy):
    """On the toy model the correct options keep ranking first even at non-member loss level (its
    0.1 % mask is all embedding rows shared with the distractors): the MCQ condition must then
    hold the run until its step budget instead of declaring the items forgotten."""
    cfg = RunConfig(**{**toy["cfg"].to_dict(), "settings": {"max_steps": 30}})
    r = run_unlearning(cfg)
    info = r["info"]
    reached = info["stop_forget_mcq_acc"] <= info["stop_calib_mcq_acc"] and info["calibration_auc"] <= 0.5
    assert info["stopped"] == ("reached_target" if reached else "max_steps"), info
    # A run that ends on its step budget still gets the retain repair, on the same mask.
    assert "repair_damaged_before" in info and info["repair_damaged_after"] <= info["repair_damaged_before"]
    assert r["changed_weights"] <= info["mask_size"]


def test_auc_bootstrap_interval():
    from hdsu_core.metrics import auc_bootstrap_ci

    g = torch.Generator().manual_seed(1)
    same_a, same_b = torch.randn(20, generator=g).tolist(), torch.randn(50, generator=g).tolist()
    lo, hi = auc_bootstrap_ci(same_a, same_b)
    assert lo < auc(same_a, same_b) < hi and lo < 0.5 < hi and hi - lo > 0.1  # small samples: wide
    lo, hi = auc_bootstrap_ci([x + 5 for x in same_a], same_b)  # separated groups
    assert lo > 0.95
    assert auc_bootstrap_ci(same_a, same_b) == auc_bootstrap_ci(same_a, same_b)  # seeded
    assert all(math.isnan(v) for v in auc_bootstrap_ci([], [1.0]))


def test_at_risk_retain_items_join_the_hold_batch(toy):
    """Opt-in hold_at_risk: retain items whose answer loss rose under the push are held in every
    batch (reported as at_risk_held_max, bounded by the setting); off by default."""
    off = run_unlearning(RunConfig(**{**toy["cfg"].to_dict(), "settings": {"max_steps": 15}}))
    assert off["info"]["at_risk_held_max"] == 0
    on = run_unlearning(
        RunConfig(**{**toy["cfg"].to_dict(), "settings": {"max_steps": 15, "hold_at_risk": 8, "at_risk_margin": 0.0}})
    )
    assert 0 < on["info"]["at_risk_held_max"] <= 8
    assert on["changed_weights"] <= on["info"]["mask_size"]


def test_retain_hold_with_kl(toy):
    """The retain hold with KL: equal to the plain answer NLL when the model is its own reference
    (KL 0) or the KL weight is 0; strictly larger once the model has moved away from the reference."""
    from hdsu_core.encoding import collate
    from hdsu_core.losses import answer_nll, retain_hold_with_kl
    from hdsu_core.models import clone_model

    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    model, tok = b.model, b.tokenizer
    ids, att, labels = collate(
        [encode_qa(tok, it.question, it.answer_text) for it in toy["items"][:16]], tok.pad_token_id
    )
    ref = clone_model(model)
    nll = answer_nll(model, ids, att, labels).mean()
    assert torch.allclose(retain_hold_with_kl(model, ref, ids, att, labels, 1.0), nll, atol=1e-5)
    with torch.no_grad():
        model.get_output_embeddings().weight.add_(0.05 * torch.randn_like(model.get_output_embeddings().weight))
    moved_nll = answer_nll(model, ids, att, labels).mean()
    assert torch.allclose(retain_hold_with_kl(model, ref, ids, att, labels, 0.0), moved_nll, atol=1e-5)
    assert retain_hold_with_kl(model, ref, ids, att, labels, 1.0) > moved_nll + 1e-4


def test_project_out_leaves_guarded_losses_unchanged_first_order():
    """The retain repair's direction is orthogonal to every guard gradient (forget and calibration
    answer loss), even when the guards are correlated; the rest of the direction is kept."""
    from hdsu_core.methods.hdsu.geometry import project_out

    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        d, a = torch.randn(40, generator=g), torch.randn(40, generator=g)
        b = 0.8 * a + 0.2 * torch.randn(40, generator=g)
        p = project_out(d, [a, b])
        assert abs(float(torch.dot(p, a))) < 1e-4 and abs(float(torch.dot(p, b))) < 1e-4
        assert torch.allclose(project_out(p, [a, b]), p, atol=1e-5)  # idempotent
    assert torch.equal(project_out(d, [torch.zeros(40)]), d)


def test_option_margins_match_the_mcq_probe(toy):
    """The differentiable option scores behind the repair agree with the MCQ probe: margin > 0
    exactly where score_mcq counts the item correct; the option cross-entropy has a gradient."""
    from hdsu_core.losses import option_cross_entropy, option_margins
    from hdsu_core.probes import score_mcq

    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    items = toy["items"][:40]
    with torch.no_grad():
        b.model.get_output_embeddings().weight.add_(0.3 * torch.randn_like(b.model.get_output_embeddings().weight))
    margins = option_margins(b.model, b.tokenizer, items, batch_items=16)
    probe = score_mcq(b.model, b.tokenizer, items)
    assert [m > 0 for m in margins] == [r["correct"] for r in probe]
    assert any(m <= 0 for m in margins) and any(m > 0 for m in margins)
    ce = option_cross_entropy(b.model, b.tokenizer, items[:4]).mean()
    ce.backward()
    assert b.model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_retain_repair_restores_damaged_items_and_keeps_the_target(demo_result):
    """Demo run: after the target is reached, retained items the push flipped are repaired (none
    left among the watched items, or the last repair step was undone) and the stop condition still
    holds at the final state (checked in test_mcq_stop_rule_reaches_non_member_accuracy)."""
    info = demo_result["info"]
    assert info["repair_damaged_after"] <= info["repair_damaged_before"]
    assert info["repair_damaged_after"] == 0 or info["repair_reverted"] or info["repair_steps"] == 30
    assert demo_result["retain_acc_after"] >= demo_result["retain_acc_before"] - 0.02, demo_result


def test_calibration_halves_matched_on_original_loss():
    """With the original model's losses, every pair of neighbours in loss order is split one to
    each half (so both halves start from the same loss distribution), the halves partition the
    holdout, and the seed decides which item of a pair goes where."""
    from hdsu_core.datasets import QAItem
    from hdsu_core.engine import calibration_split

    items = [QAItem(id=f"h{i}", question=f"q{i}", options=("a", "b"), answer=0, source="demo") for i in range(41)]
    losses = {it.id: float((i * 37) % 41) for i, it in enumerate(items)}  # a shuffled ranking
    calib, evaluation = calibration_split(items, 0, losses)
    assert sorted(it.id for it in calib + evaluation) == sorted(it.id for it in items)
    assert not {it.id for it in calib} & {it.id for it in evaluation}
    assert abs(len(calib) - len(evaluation)) <= 1
    in_calib = {it.id for it in calib}
    ranked = sorted(items, key=lambda it: losses[it.id])
    for a, b in zip(ranked[0::2], ranked[1::2]):
        assert (a.id in in_calib) != (b.id in in_calib), (a.id, b.id)
    assert calibration_split(items, 0, losses) == (calib, evaluation)  # deterministic
    assert calibration_split(items, 1, losses)[0] != calib  # the seed decides
    # Without losses: the seeded random halves as before.
    rc, re_ = calibration_split(items, 0)
    assert sorted(it.id for it in rc + re_) == sorted(it.id for it in items)


def test_settle_pulls_over_forgotten_items_back(demo_result):
    """The same demo run without the settle step ends where the settled run started settling. If
    that end is more than settle_margin below chance, the settled run must have taken settle steps,
    be closer to chance on the calibration half, and still answer the forget items no better than
    the non-members; if not, settling must not have touched the run."""
    plain = run_unlearning(RunConfig(forget=["anxiety"], n_generations=2, settings={"settle_steps": 0}))
    p, s = plain["info"], demo_result["info"]
    assert p["steps"] == s["steps"] and p["repair_steps"] == s["repair_steps"]  # same run up to the settle
    if p["calibration_auc"] < 0.5 - 0.03:
        assert s["settle_steps"] >= 1, s
        assert abs(s["calibration_auc"] - 0.5) < abs(p["calibration_auc"] - 0.5), (p, s)
        assert s["stop_forget_mcq_acc"] <= s["stop_calib_mcq_acc"]
        assert demo_result["changed_weights"] <= s["mask_size"]
    else:
        assert s.get("settle_steps", 0) == 0
        assert demo_result["mia_auc"] == plain["mia_auc"]


def test_option_uniform_loss_is_the_kl_from_chance(toy, monkeypatch):
    """KL(uniform || softmax of the option scores): 0 when every option scores the same, the exact
    formula otherwise (constructed scores), and on the toy model >= 0 with a real gradient."""
    from hdsu_core import losses

    items = toy["items"][:2]
    fake = [torch.zeros(len(items[0].options)), torch.tensor([0.0, -1.0, -2.0, -3.0][: len(items[1].options)])]
    monkeypatch.setattr(losses, "option_logprob_sums", lambda *a, **k: fake)
    out = losses.option_uniform_loss(None, None, items)
    assert abs(float(out[0])) < 1e-6
    q = torch.softmax(fake[1], 0)
    u = torch.full_like(q, 1 / len(q))
    assert abs(float(out[1]) - float((u * (u / q).log()).sum())) < 1e-6
    monkeypatch.undo()
    b = prepare_model(toy["cfg"], toy["items"], lambda *a: None)
    real = losses.option_uniform_loss(b.model, b.tokenizer, toy["items"][:8])
    assert (real >= -1e-6).all() and float(real.detach().mean()) > 0.1  # the memorised toy model is far from chance
    real.mean().backward()
    assert b.model.get_output_embeddings().weight.grad.abs().sum() > 0


def test_option_push_joins_the_push_only_when_asked(toy):
    """``option_weight`` > 0 changes the run (and deterministically so); 0 is the run as before."""
    base = {**toy["cfg"].to_dict(), "method": "hdsu"}
    plain = run_unlearning(RunConfig(**{**base, "settings": {"max_steps": 5}}))
    zero = run_unlearning(RunConfig(**{**base, "settings": {"max_steps": 5, "option_weight": 0.0}}))
    opt = [run_unlearning(RunConfig(**{**base, "settings": {"max_steps": 5, "option_weight": 5.0}})) for _ in range(2)]
    keys = ["forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights"]
    assert {k: plain[k] for k in keys} == {k: zero[k] for k in keys}
    assert {k: opt[0][k] for k in keys} == {k: opt[1][k] for k in keys}
    assert opt[0]["info"]["mask_sha256"] == plain["info"]["mask_sha256"]  # same mask, another push
    assert opt[0]["info"]["push_cos_mean"] != plain["info"]["push_cos_mean"]  # the push direction changed
