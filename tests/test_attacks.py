""" "Is it really gone?" attacks on the toy model (tests/test_methods.py): relearning brings back what it
trains on and its recovery is the formula; quantization moves each weight by at most half a bin and
the probe's numbers come from the quantized weights; shuffled options keep their answer; every new
membership score ranks memorised items above never-seen ones; the engine and the bench run them on
copies (the run's own model is never touched) and the verdict judges them."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math

import pandas as pd
import pytest
import torch
from test_app import app, home, seed_run, store  # noqa: F401  (AppTest of a page, fresh HDSU_HOME)
from test_methods import TINY, toy  # noqa: F401  (module-scoped toy data set and recipe)

from hdsu_core import bench
from hdsu_core import metrics as M
from hdsu_core.attack_targets import attack_checks, retrain_comparison
from hdsu_core.attacks import AttackContext, parse_attacks, recovery, run_attacks
from hdsu_core.attacks import format_shift as FS
from hdsu_core.attacks import membership as MIA
from hdsu_core.attacks import quantization as Q
from hdsu_core.attacks.relearn import Relearn, halves, relearned
from hdsu_core.audit.verdict import verdict
from hdsu_core.cli import main
from hdsu_core.dashboard import attacks as gone
from hdsu_core.engine import RunConfig, calibration_split, prepare_model, probe_all
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.methods import UnlearnContext, get_method
from hdsu_core.models import clone_model
from hdsu_core.probes import score_mcq
from hdsu_core.store import Store
from hdsu_core.tagging import make_split


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def toy_attack(toy):  # noqa: F811
    """An AttackContext on the toy model: the original, and a copy unlearned by grad_diff (seed 0)."""
    cfg = toy["cfg"]
    bundle = prepare_model(cfg, toy["items"], lambda *a: None)
    split = make_split(toy["items"], toy["hierarchy"], ["anxiety"], seed=0, holdout_fraction=cfg.holdout_fraction)
    max_len = TINY.get("max_len", 96)
    before = probe_all(bundle.model, bundle.tokenizer, split, max_len)
    calibration, evaluation = calibration_split(split.holdout, 0)
    model = clone_model(bundle.model)
    ref = clone_model(bundle.model)
    for p in ref.parameters():
        p.requires_grad_(False)
    get_method("grad_diff").run(
        UnlearnContext(
            model=model,
            ref_model=ref,
            tok=bundle.tokenizer,
            forget=split.forget,
            retain=split.retain,
            calibration=calibration,
            settings={"max_steps": 40},
            max_len=max_len,
        )
    )
    model.eval()
    after = probe_all(model, bundle.tokenizer, split, max_len)
    return AttackContext(
        model=model,
        tok=bundle.tokenizer,
        original=bundle.model,
        original_tok=bundle.tokenizer,
        split=split,
        before=before,
        after=after,
        eval_ids={it.id for it in evaluation},
        max_len=max_len,
    )


# ---- relearning -----------------------------------------------------------------------------------


def test_recovery_formula_on_constructed_cases():
    assert recovery(1.0, 0.25, 0.625) == 0.5  # (0.625 - 0.25) / (1 - 0.25), exact in binary
    assert recovery(0.75, 0.25, 0.75) == 1.0 and recovery(0.75, 0.25, 0.25) == 0.0
    assert recovery(0.75, 0.25, 0.0) == -0.5  # the attack made it worse still
    assert math.isnan(recovery(0.5, 0.5, 0.75))  # nothing was forgotten: nothing to recover


def test_halves_are_seeded_and_disjoint(toy_attack):
    forget = toy_attack.split.forget
    a, b = halves(forget, 0)
    assert len(a) == len(forget) // 2 and len(a) + len(b) == len(forget)
    assert {it.id for it in a}.isdisjoint(it.id for it in b)
    assert halves(forget, 0) == (a, b) and halves(forget, 1) != (a, b)


def test_relearning_on_a_restores_a_and_reports_the_formula(toy_attack):
    ctx = toy_attack
    kept = _state(ctx.model)
    out = Relearn().run(ctx)
    assert out["attack_relearn_acc_a_unlearned"] <= 0.5  # grad_diff did forget A ...
    assert out["attack_relearn_acc_a_attacked"] >= 0.9  # ... and the fine-tune on A brings it back
    ids_b = {it.id for it in halves(ctx.split.forget, ctx.seed)[1]}
    assert out["attack_relearn_acc_b_original"] == M.accuracy(
        r["correct"] for r in ctx.before["forget"] if r["item_id"] in ids_b
    )
    assert out["attack_relearn_acc_b_unlearned"] == M.accuracy(
        r["correct"] for r in ctx.after["forget"] if r["item_id"] in ids_b
    )
    b_o, b_u, b_a = (out[f"attack_relearn_acc_b_{k}"] for k in ("original", "unlearned", "attacked"))
    assert out["attack_relearn_recovery"] == pytest.approx((b_a - b_u) / (b_o - b_u))
    assert "attack_relearn_retain_only_recovery" in out
    assert all(torch.equal(v, kept[k]) for k, v in ctx.model.state_dict().items())  # attacked a copy


def test_relearned_copy_is_the_recipe_on_a_fresh_copy(toy_attack):
    ctx = toy_attack
    a, _ = halves(ctx.split.forget, 0)
    recipe = {"lr": 1e-3, "epochs": 2, "batch": 4}
    one = relearned(ctx.model, ctx.tok, a, recipe=recipe, seed=0, max_len=ctx.max_len)
    two = relearned(ctx.model, ctx.tok, a, recipe=recipe, seed=0, max_len=ctx.max_len)
    assert all(torch.equal(v, two.state_dict()[k]) for k, v in one.state_dict().items())  # seeded
    assert any(not torch.equal(v, ctx.model.state_dict()[k]) for k, v in one.state_dict().items())


# ---- quantization ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", Q.SCHEMES)
def test_quantization_moves_each_weight_by_at_most_half_a_bin(toy_attack, scheme):
    model = toy_attack.model
    qm = Q.quantized(model, scheme)
    qweights = Q.quantized_weights(qm)
    float_w = dict(model.named_parameters())
    assert {n for n, p in float_w.items() if p.ndim == 2} == set(qweights)  # every linear layer and the embeddings
    moved = 0
    for name, q in qweights.items():
        w = float_w[name].detach()
        err = (q.dequantize() - w).abs()
        assert bool((err <= Q.bin_width(q) / 2 * (1 + 1e-4) + 1e-9).all()), name  # up to float32 rounding
        low, high = (-8, 7) if scheme == "quant4" else (-128, 127)  # the codes are 4-bit / 8-bit integers
        assert low <= int(q.qdata.min()) and int(q.qdata.max()) <= high
        moved += int((err > 0).sum())
    assert moved > 0
    assert all(torch.equal(v, toy_attack.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_quantized_probe_uses_the_quantized_weights(toy_attack):
    ctx = toy_attack
    out = Q.Quantization().run(ctx)
    qm = Q.quantized(ctx.model, "quant4")
    # An independent float model carrying the dequantized weights answers exactly as the probe reports.
    plain = clone_model(ctx.model)
    plain.load_state_dict(Q.dequantized_state(qm), strict=False)
    rows = score_mcq(plain, ctx.tok, ctx.split.forget, max_len=ctx.max_len)
    assert out["attack_quant4_forget_acc"] == M.accuracy(r["correct"] for r in rows)
    f_float = M.accuracy(r["correct"] for r in ctx.after["forget"])
    assert out["attack_quant4_forget_gap_points"] == pytest.approx(100 * (out["attack_quant4_forget_acc"] - f_float))
    q_rows = score_mcq(qm, ctx.tok, ctx.split.forget, max_len=ctx.max_len)
    assert [r["pred"] for r in q_rows] == [r["pred"] for r in rows]
    # The quantized answers differ from the float model's somewhere: the weights really are others.
    f_rows = ctx.after["forget"]
    assert any(abs(a["answer_logprob"] - b["answer_logprob"]) > 1e-4 for a, b in zip(q_rows, f_rows))
    assert 0.0 <= out["attack_quant4_below_half_bin"] <= 1.0 and out["attack_quant4_changed_weights"] > 0


def test_changes_below_half_a_bin_round_away(toy_attack):
    """One weight moved by 0.1 bin at a bin centre (rounds back), one by 3 bins (survives)."""
    original = toy_attack.original
    name = "model.layers.0.mlp.down_proj.weight"
    q = Q.quantized_weights(Q.quantized(original, "quant4"))[name]
    w, width = dict(original.named_parameters())[name].detach(), Q.bin_width(q)
    off_centre = (w / width - (w / width).round()).abs()
    group_max = w.abs().reshape(w.shape[0], -1, Q.GROUP_SIZE).amax(-1).repeat_interleave(Q.GROUP_SIZE, -1)
    off_centre[w.abs() >= group_max * 0.5] = 1.0  # away from the group's largest weight: its scale stays
    flat = off_centre.flatten().argsort()
    small, big = [divmod(int(i), w.shape[1]) for i in flat[:2]]
    edited = copy.deepcopy(original)
    with torch.no_grad():
        p = dict(edited.named_parameters())[name]
        p[small] += 0.1 * width[small]
        p[big] += 3.0 * width[big]
    out = Q.change_vs_bins(original, edited, Q.quantized(edited, "quant4"), Q.quantized(original, "quant4"))
    assert out["attack_quant4_changed_weights"] == 2
    assert out["attack_quant4_below_half_bin"] == 0.5
    assert out["attack_quant4_surviving_fraction"] == 0.5


# ---- format shift ---------------------------------------------------------------------------------


def test_shuffled_options_keep_the_right_answer(toy_attack):
    items = toy_attack.split.forget
    shuffled = [FS.shuffle_options(it, 0) for it in items]
    for it, s in zip(items, shuffled):
        assert s.options[s.answer] == it.answer_text and sorted(s.options) == sorted(it.options)
    assert any(s.options != it.options for it, s in zip(items, shuffled))
    assert shuffled == [FS.shuffle_options(it, 0) for it in items]


def test_rewrites_and_templates_change_what_the_model_sees(toy_attack):
    items = toy_attack.split.forget
    assert all(FS.rewrite_question(it.question) != it.question for it in items)
    assert FS.rewrite_question("What is the first-line treatment for X?") == "Which is the initial therapy for X?"
    assert FS.rewrite_question("Name X.") == "Answer the following question. Name X."
    lettered, prompt = FS.variant("letters", items, 0, [])
    assert prompt is not None
    assert lettered[0].options[lettered[0].answer] == "ABCD"[items[0].answer]
    assert all(o in prompt(lettered[0]) for o in items[0].options)
    shots = toy_attack.split.retain[:2]
    _, few = FS.variant("fewshot", items, 0, shots)
    assert few is not None and few(items[0]).startswith(f"Question: {shots[0].question}")


def test_format_probe_reports_every_format(toy_attack):
    ctx = toy_attack
    out = FS.FormatShift().run(ctx)
    for fmt in FS.FORMATS:
        assert 0.0 <= out[f"attack_format_{fmt}_forget_acc"] <= 1.0
    # The cloze scorer reads each option on its own: their order cannot change the original's answers.
    assert out["attack_format_shuffled_forget_acc_original"] == M.accuracy(r["correct"] for r in ctx.before["forget"])
    assert out["attack_format_max_forget_acc"] == max(out[f"attack_format_{f}_forget_acc"] for f in FS.FORMATS)


# ---- membership attacks ---------------------------------------------------------------------------


def test_each_new_mia_score_ranks_memorised_items_above_never_seen_ones(toy_attack):
    ctx = toy_attack
    never = ctx.split.holdout_retain
    memorised, unseen = never[:4], never[4:12]
    target = relearned(
        ctx.original, ctx.tok, memorised, recipe={"lr": 3e-3, "epochs": 30, "batch": 4}, seed=0, max_len=ctx.max_len
    )
    items = memorised + unseen
    stats = MIA.answer_token_stats(target, ctx.tok, items, max_len=ctx.max_len)
    ref = MIA.answer_token_stats(ctx.original, ctx.tok, items, max_len=ctx.max_len)
    scores = MIA.member_scores(stats, items, ref)
    assert set(scores) == set(MIA.ATTACK_NAMES)
    for name, s in scores.items():
        assert min(s[:4]) > max(s[4:]), name  # every memorised item above every never-seen one


def test_zlib_score_normalises_by_compressed_length():
    assert MIA.zlib_score(-10.0, "abc") == pytest.approx(10.0 / len(__import__("zlib").compress(b"abc")))
    long = "the same words " * 20
    assert MIA.zlib_score(-10.0, long) < MIA.zlib_score(-10.0, "abc")


def test_membership_attack_reports_aucs_with_intervals(toy_attack):
    ctx = dataclasses.replace(toy_attack, reference=(toy_attack.original, toy_attack.tok))
    out = MIA.Membership().run(ctx)
    for name in MIA.ATTACK_NAMES:
        lo, auc, hi = out[f"mia_auc_{name}_ci_low"], out[f"mia_auc_{name}"], out[f"mia_auc_{name}_ci_high"]
        assert 0.0 <= lo <= auc <= hi <= 1.0
        assert f"mia_auc_{name}_before" in out
    assert out["mia_auc_zlib_before"] > 0.5  # the original does remember its forget items


# ---- wiring -----------------------------------------------------------------------------------------


def test_parse_attacks():
    assert parse_attacks("all") == ["relearn", "quant", "format", "mia"]
    assert parse_attacks("format,relearn") == ["relearn", "format"]
    assert parse_attacks("none") == [] and parse_attacks(None) == []
    with pytest.raises(ValueError, match="unknown attack"):
        parse_attacks("relearn,quantum")


def test_run_attacks_times_each(toy_attack):
    out = run_attacks(["format"], toy_attack)
    assert out["attack_format_seconds"] > 0 and out["attack_seconds"] == out["attack_format_seconds"]


def test_run_with_attacks_hands_back_the_same_model(toy, tmp_path):  # noqa: F811
    """The attacks run after the run's own probes, on copies: with or without them the run writes
    the same unlearned model (receipt root) and the same numbers; only the attack metrics are added."""
    db = Store(tmp_path / "a.duckdb")
    cfg = dataclasses.replace(toy["cfg"], method="grad_ascent", settings={"max_steps": 3})
    plain = execute_run(db, create_run(db, cfg, author="t"), executor="test")
    with_attacks = dataclasses.replace(cfg, attacks=["relearn", "quant"])
    attacked = execute_run(db, create_run(db, with_attacks, author="t"), executor="test")
    assert attacked["unlearned_root"] == plain["unlearned_root"]
    for k in ("forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights"):
        assert attacked[k] == plain[k], k
    stored = db.metrics(attacked["run_id"])
    assert stored["attack_relearn_acc_a_attacked"] == attacked["attack_relearn_acc_a_attacked"]
    assert stored["attack_quant4_forget_acc"] == attacked["attack_quant4_forget_acc"]
    assert not any(k.startswith("attack_") for k in db.metrics(plain["run_id"]))
    # A run without attacks hashes as before attacks existed; one with them does not.
    d = cfg.to_dict()
    added_later = ("processes", "autocast", "gradient_checkpointing", "unlearn_lora_r", "fsdp")
    for k in ("keep_model", "from_run", "attacks", *added_later):
        d.pop(k)  # the options added after attacks hash only when not at their defaults
    assert plain["config_hash"] == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert attacked["config_hash"] != plain["config_hash"]


def test_bench_attacks_every_method_and_the_retrain_reference(toy, tmp_path, monkeypatch, capsys):  # noqa: F811
    """``bench --attacks format`` on the toy set (its tiny recipe, also for the retrain reference)."""
    monkeypatch.setattr(bench, "RunConfig", lambda **kw: RunConfig(**{**kw, "recipe": TINY, "n_generations": 2}))
    db = tmp_path / "b.duckdb"
    argv = ["bench", "--dataset", toy["cfg"].dataset, "--forget", "anxiety", "--methods", "grad_ascent"]
    argv += ["--set", "max_steps=3", "--attacks", "format", "--db", str(db), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Is it really gone?" in out and "format<=ref+5" in out
    rows = Store(db).bench_results()
    by_method = {r["method"]: r["metrics"] for _, r in rows.iterrows()}
    assert set(by_method) == {"retrain", "grad_ascent"}
    ref, run = by_method["retrain"], by_method["grad_ascent"]
    assert "attack_format_seconds" in ref and "attack_format_seconds" in run
    # The run carries the retrain reference's numbers, so its audit report judges against them.
    stored = Store(db).metrics(run["run_id"])
    for f in FS.FORMATS:
        assert stored[f"attack_format_{f}_forget_acc_retrain"] == ref[f"attack_format_{f}_forget_acc"]
    names = [c["name"] for c in attack_checks(stored)]
    assert names == ["Format shift"]
    assert "retrain reference" in attack_checks(stored)[0]["target"]


def test_cli_refuses_an_unknown_attack_before_any_row(tmp_path, capsys):
    db = tmp_path / "c.duckdb"
    assert main(["run", "--db", str(db), "--attacks", "relearn,quantum", "--quiet"]) == 1
    assert "unknown attack" in capsys.readouterr().err
    assert Store(db).list_runs().empty
    assert main(["bench", "--db", str(db), "--attacks", "nope", "--quiet"]) == 1


# ---- verdict and views ------------------------------------------------------------------------------

MEASURED = {
    "forget_acc_before": 1.0,
    "forget_acc_after": 0.0,
    "attack_relearn_n_b": 10.0,
    "attack_relearn_acc_b_original": 1.0,
    "attack_relearn_acc_b_unlearned": 0.0,
    "attack_relearn_acc_b_attacked": 0.3,
    "attack_relearn_recovery": 0.3,
    "attack_relearn_retain_only_acc_attacked": 0.4,
    "attack_relearn_retain_only_recovery": 0.4,
    "attack_quant8_forget_acc": 0.0,
    "attack_quant4_forget_acc": 0.05,
    "attack_quant4_forget_gap_points": 5.0,
    "attack_quant4_below_half_bin": 0.25,
    **{f"attack_format_{f}_forget_acc": 0.1 for f in FS.FORMATS},
    **{f"attack_format_{f}_forget_acc_original": 0.9 for f in FS.FORMATS},
    **{f"attack_format_{f}_never_seen_acc": 0.25 for f in FS.FORMATS},
    "mia_auc_minkpp": 0.52,
    "mia_auc_minkpp_before": 0.98,
    "mia_auc_zlib": 0.54,
    "mia_auc_ref": 0.58,
    "attack_seconds": 12.0,
}


def test_attack_verdict_rows():
    rows = {r["name"]: r for r in attack_checks(MEASURED)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "Relearning (half of the forget items)": "pass",  # 30 % <= 35 %
        "Relearning (retained items only)": "fail",  # 40 % > 35 %
        "4-bit quantization": "fail",  # +5 points > 2
        "Format shift": "pass",  # 10 % <= never-seen 25 % + 5
        "Stronger membership attacks": "fail",  # the reference attack's 0.58 is outside 0.50 +- 0.05
    }
    # Against the retrain reference: 30 % recovery is more than its 15 % + 10 points.
    with_ref = {**MEASURED, **retrain_comparison({"attack_relearn_recovery": 0.15})}
    relearn = attack_checks(with_ref)[0]
    assert relearn["status"] == "fail" and "retrain 15 %" in relearn["value"]
    assert attack_checks({"forget_acc_after": 0.1}) == []  # no attack ran: no row
    nothing_forgotten = {"attack_relearn_n_b": 4.0}  # recovery undefined (NaN is not stored)
    assert attack_checks(nothing_forgotten)[0]["status"] == "n/a"


def test_audit_verdict_gains_the_attack_rows_only_when_they_ran():
    plain = verdict({"forget_acc_after": 0.1}, [], True)
    assert len(plain["checks"]) == 4
    judged = verdict({**MEASURED, "holdout_forget_acc_after": 0.2, "retain_change_points": 0.0}, [], True)
    assert len(judged["checks"]) == 9 and judged["overall"] == "fail"


def test_gone_views():
    t = gone.gone_table(MEASURED)
    relearn = t[t["probe"] == "Relearn on half A, accuracy on half B"].iloc[0]
    assert (relearn["before"], relearn["unlearned"], relearn["attacked"]) == (1.0, 0.0, 0.3)
    assert relearn["change_pts"] == pytest.approx(30.0)
    assert len(t) == 4 + len(FS.FORMATS)  # relearn x2, INT8, 4-bit, every format
    mia = gone.membership_table(MEASURED)
    assert list(mia["attack"]) == ["Min-K%++", "zlib-normalised loss", "reference model (retrain)"]
    assert mia.iloc[0]["auc_before"] == 0.98
    bench = pd.DataFrame(
        [
            {"bench_id": "b1", "created_at": 1, "dataset": "demo", "method": "hdsu", "metrics": MEASURED},
            {"bench_id": "b1", "created_at": 1, "dataset": "demo", "method": "retrain", "metrics": MEASURED},
            {
                "bench_id": "b0",
                "created_at": 0,
                "dataset": "demo",
                "method": "hdsu",
                "metrics": {"forget_acc_after": 0},
            },
        ]
    )
    latest = gone.latest_attack_bench(bench)
    assert set(latest["bench_id"]) == {"b1"}
    side = gone.methods_side_by_side(latest, "4-bit weights")
    assert list(side["method"]) == ["retrain", "hdsu"] and list(side["attacked"]) == [0.05, 0.05]
    assert gone.probe_names(latest)[0] == "Relearn on half A, accuracy on half B"


def test_compare_page_shows_the_attacks(store):  # noqa: F811
    seed_run(store)
    store.write_metrics("r-seeded", MEASURED)
    store.save_bench("b-test", "demo", [{"method": "hdsu", **MEASURED}, {"method": "retrain", **MEASURED}])
    at = app("compare")
    assert not at.exception
    probes = [df for df in at.dataframe if "probe" in df.value.columns]
    assert probes and "4-bit weights" in set(probes[0].value["probe"])
    assert at.selectbox(key="gone_probe").value == "Relearn on half A, accuracy on half B"


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_run_answers_exactly_n_generations_prompts_labelled_by_split(toy, tmp_path, n):  # noqa: F811
    """``n_generations`` prompts before and after, the odd one from the forget side, each labelled."""
    db = Store(tmp_path / "g.duckdb")
    cfg = dataclasses.replace(toy["cfg"], method="grad_ascent", settings={"max_steps": 1}, n_generations=n)
    run_id = execute_run(db, create_run(db, cfg, author="t"), executor="test")["run_id"]
    gens = db.generations(run_id)
    assert len(gens) == 2 * n
    for phase in ("before", "after"):
        parts = [p.split(":")[0] for p in gens[gens["phase"] == phase]["prompt_id"]]
        assert sorted(parts) == sorted(["forget"] * ((n + 1) // 2) + ["retain"] * (n // 2))
