"""Unlearning through LoRA adapters (``--lora R``, ``RunConfig.unlearn_lora_r``) on the memorised
toy model: every method trains only the adapters, the counts are exact (adapter size, adapter
elements moved, weights changed by the merge), only the adapted matrices change, the receipt and
the delta hold the merged model, a rerun gives the same weights, and bad ranks are one-line
refusals before a run row exists."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from test_methods import toy  # noqa: F401  (module-scoped toy data set and recipe)

from hdsu_core import audit, lora
from hdsu_core.artifacts import run_models as RM
from hdsu_core.artifacts.delta import changed_weights, load_delta
from hdsu_core.bench import format_table, run_bench
from hdsu_core.cli import main
from hdsu_core.dashboard.bench_view import bench_frame
from hdsu_core.encoding import collate, encode_qa
from hdsu_core.engine import RunConfig, check_run_options, prepare_model, run_unlearning
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.losses import answer_logits, token_logprobs
from hdsu_core.methods import available
from hdsu_core.progress import no_progress
from hdsu_core.store import Store

R = 4
QUICK = {"max_steps": 3, "check_every": 2}
# HDSU without its repair / settle phases (a few more steps of the same kind); a mask of 5 % of the
# adapter (the default 0.1 % of a 1-layer toy's adapter would be a handful of elements).
SETTINGS = {"hdsu": {**QUICK, "repair_steps": 0, "settle_steps": 0, "mask_fraction": 0.05}}
MASKED = {"hdsu", "grad_diff_masked", "npo_masked"}


def _settings(method: str) -> dict:
    if method in SETTINGS:
        return SETTINGS[method]
    return {**QUICK, "mask_fraction": 0.05} if method in MASKED else QUICK


def _cfg(toy, method: str, **over) -> RunConfig:  # noqa: F811
    base = {**toy["cfg"].to_dict(), "method": method, "settings": _settings(method), "device": "cpu"}
    return RunConfig(**{**base, "n_generations": 0, "unlearn_lora_r": R, **over})


def _adapted(model: torch.nn.Module) -> dict[str, int]:
    """{weight name: elements} of the Linear layers LoRA adapts, and the rank-R adapter size:
    r * (in + out) per matrix, computed from the layer shapes (not from peft)."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in lora.LORA_TARGETS:
            out[f"{name}.weight"] = mod.weight.numel()
    return out


def _adapter_size(model: torch.nn.Module) -> int:
    return sum(
        R * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in lora.LORA_TARGETS
    )


@pytest.fixture(scope="module")
def original(toy):  # noqa: F811
    return prepare_model(toy["cfg"], toy["items"], no_progress).model


@pytest.mark.parametrize("method", available())
def test_every_method_unlearns_through_the_adapters_with_exact_counts(toy, original, method):  # noqa: F811
    result = run_unlearning(_cfg(toy, method))
    info = result["info"]
    assert info["unlearn_lora_r"] == R
    assert info["unlearn_adapter_params"] == _adapter_size(original) == 4 * R * (64 + 64) + 3 * R * (64 + 128)
    moved = info["unlearn_adapter_params_changed"]
    assert 0 < moved <= info["unlearn_adapter_params"]
    if method in MASKED:  # the mask is drawn over the adapter: only its elements may move
        assert info["mask_size"] == int(0.05 * info["unlearn_adapter_params"])
        assert moved <= info["mask_size"]
    # The merged model's changed weights are the run's changed weights, within the adapted matrices.
    assert 0 < info["unlearn_merged_weights_changed"] == result["changed_weights"] <= sum(_adapted(original).values())
    assert result["total_weights"] == sum(p.numel() for p in original.parameters())


def test_the_receipt_and_delta_hold_the_merged_model_and_a_rerun_is_the_same(toy, original, tmp_path, capsys):  # noqa: F811
    db = str(tmp_path / "h.duckdb")
    argv = ["run", "--dataset", toy["cfg"].dataset, "--forget", "anxiety", "--method", "grad_diff", "--lora", str(R)]
    argv += [f"--inject-set={k}={v}" for k, v in toy["cfg"].recipe.items()]
    argv += ["--set", "max_steps=3", "--device", "cpu", "--db", db, "--quiet", "--json"]
    assert main(argv) == 0 and main(argv) == 0
    capsys.readouterr()
    store = Store(db)
    first, second = list(store.list_runs().sort_values("created_at")["run_id"])
    info = store.get_run(first)["summary"]["info"]
    rm = RM.get_run_model(store, first)
    assert rm.receipt["unlearning_adapter"] == {k: info[k] for k in rm.receipt["unlearning_adapter"]}
    assert set(rm.receipt["unlearning_adapter"]) == {
        "unlearn_lora_r",
        "unlearn_adapter_params",
        "unlearn_adapter_params_changed",
        "unlearn_merged_weights_changed",
    }
    delta, _ = load_delta(Path(rm.files_dir) / RM.DELTA_FILE)
    assert set(delta) <= set(_adapted(original))  # embeddings, norms and the head never move
    assert changed_weights(delta) == info["unlearn_merged_weights_changed"] == rm.receipt["delta"]["changed_weights"]
    rebuilt = RM.materialize(store, first).model.state_dict()  # original + delta, checked against the receipt
    assert set(rebuilt) == set(original.state_dict())  # a plain model: no peft modules in what is handed back
    assert RM.get_run_model(store, second).unlearned.root == rm.unlearned.root  # seeded adapters, same weights
    rows = {r["label"]: r["value"] for r in audit.procedure_rows(info)}
    assert rows["Unlearning (LoRA)"].startswith(f"rank {R}, {info['unlearn_adapter_params']:,} adapter parameters")


def test_the_rank_keys_the_config_hash_only_when_given(toy):  # noqa: F811
    plain = RunConfig(**{**_cfg(toy, "grad_diff").to_dict(), "unlearn_lora_r": None})
    assert plain.hash() != _cfg(toy, "grad_diff").hash() != _cfg(toy, "grad_diff", unlearn_lora_r=8).hash()
    d = plain.to_dict()
    d.pop("unlearn_lora_r")
    assert RunConfig.from_dict(d).hash() == plain.hash()  # a run without LoRA hashes as before the option


@pytest.mark.parametrize(("rank", "problem"), [(0, "out of range"), (-2, "out of range"), (2.5, "not an integer")])
def test_a_bad_rank_is_a_one_line_refusal(rank, problem):
    with pytest.raises(ValueError, match=f"unlearn_lora_r={rank!r} refused: {problem}") as e:
        check_run_options(RunConfig(forget=["anxiety"], unlearn_lora_r=rank))
    assert "\n" not in str(e.value) and "an integer >= 1" in str(e.value)


def test_cli_refuses_a_bad_rank_before_a_run_row_exists(toy, tmp_path, capsys):  # noqa: F811
    db = tmp_path / "h.duckdb"
    argv = ["run", "--dataset", toy["cfg"].dataset, "--forget", "anxiety", "--lora", "0", "--db", str(db), "--quiet"]
    assert main(argv + ["--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unlearn_lora_r=0 refused") and "\n" not in err
    assert Store(str(db)).list_runs().empty


def test_bench_runs_every_method_through_adapters_and_refuses_a_bad_rank_first(toy, tmp_path, capsys):  # noqa: F811
    db = str(tmp_path / "h.duckdb")
    argv = ["bench", "--dataset", toy["cfg"].dataset, "--forget", "anxiety", "--methods", "grad_diff,npo"]
    argv += ["--no-retrain", "--set", "max_steps=3", "--device", "cpu", "--db", db, "--quiet", "--json"]
    assert main(argv + ["--lora", "0"]) == 1
    assert "unlearn_lora_r=0 refused" in capsys.readouterr().err and Store(db).list_runs().empty
    store = Store(db)
    rows = run_bench(
        [toy["cfg"].dataset],
        ["grad_diff", "npo"],
        forget=["anxiety"],
        store=store,
        retrain=False,
        settings={m: QUICK for m in ("grad_diff", "npo")},
        device="cpu",
        recipe=toy["cfg"].recipe,  # the toy's tiny model (the CLI's bench trains the demo recipe)
        lora_r=R,
    )
    assert [r["lora_r"] for r in rows] == [R, R]
    assert "grad_diff (LoRA r4)" in format_table(rows) and "npo (LoRA r4)" in format_table(rows)
    stored = bench_frame(store.bench_results())  # the Benchmarks page: a LoRA bench is its own entry
    assert set(stored["method"]) == {
        "grad_diff (LoRA r4, check_every=2, max_steps=3)",
        "npo (LoRA r4, check_every=2, max_steps=3)",
    }
    for r in rows:
        summary = store.get_run(r["run_id"])["summary"]
        assert summary["info"]["unlearn_lora_r"] == R
        assert 0 < summary["changed_weights"] == summary["info"]["unlearn_merged_weights_changed"]
        assert r["changed_fraction"] == summary["changed_weights"] / summary["total_weights"]


def test_the_adapters_off_reference_is_exactly_the_model_before_unlearning(toy, original):  # noqa: F811
    """A LoRA run's reference is the adapted model with its adapters off (no copy of the weights):
    called whole or through its decoder and head, it gives the original's numbers bit for bit,
    without gradients, and leaves the trained model's mode as it was."""
    base = copy.deepcopy(original).eval()
    adapted, _ = lora.wrap_for_unlearning(copy.deepcopy(original), R, seed=0)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in (p for p in adapted.parameters() if p.requires_grad):
            p.add_(0.05 * torch.randn_like(p))  # the adapters have moved, as after some steps
    ref = lora.frozen_reference(adapted)
    tok = prepare_model(toy["cfg"], toy["items"], no_progress).tokenizer
    encs = [encode_qa(tok, it.question, it.answer_text, 64) for it in toy["items"][:8]]
    ids, att, labels = collate(encs, tok.pad_token_id, "cpu")
    mask = labels[:, 1:] != -100
    adapted.train()
    assert not torch.equal(token_logprobs(adapted, ids, att), token_logprobs(base, ids, att))
    assert torch.equal(token_logprobs(ref, ids, att), token_logprobs(base, ids, att))
    assert torch.equal(answer_logits(ref, ids, att, mask), answer_logits(base, ids, att, mask))
    assert not ref(input_ids=ids, attention_mask=att).logits.requires_grad
    assert adapted.training and ref.eval() is ref and adapted.training


def test_a_run_with_the_adapters_off_reference_equals_one_with_a_frozen_copy(toy, tmp_path, monkeypatch):  # noqa: F811
    store = Store(tmp_path / "h.duckdb")

    def run(method: str) -> dict:
        run_id = create_run(store, _cfg(toy, method), author="tester")
        execute_run(store, run_id, executor="test")
        return {"root": RM.get_run_model(store, run_id).unlearned.root, **store.get_run(run_id)["summary"]}

    shared = {m: run(m) for m in ("npo", "hdsu")}

    def frozen_copy(adapted):
        ref = copy.deepcopy(adapted)  # adapters at their start (B = 0): the original's outputs
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    monkeypatch.setattr(lora, "frozen_reference", frozen_copy)
    for method, a in shared.items():
        b = run(method)
        assert a["root"] == b["root"], method  # the very same unlearned weights
        assert a["forget_acc_after"] == b["forget_acc_after"] and a["mia_auc"] == b["mia_auc"]


def test_hdsu_through_adapters_takes_its_lora_defaults_for_the_settings_left_open(toy, original):  # noqa: F811
    """Left open, hdsu's mask spans the whole adapter and its step is bounded at norm 1 (its LoRA
    defaults); a setting the user gives wins; a run without LoRA keeps the plain defaults."""
    open_run = run_unlearning(_cfg(toy, "hdsu", settings=QUICK))["info"]
    assert open_run["lora_defaults"] == {"mask_fraction": 1.0, "step_norm": 1.0}
    assert open_run["mask_size"] == open_run["unlearn_adapter_params"] == _adapter_size(original)
    given = run_unlearning(_cfg(toy, "hdsu", settings={**QUICK, "mask_fraction": 0.05}))["info"]
    assert given["lora_defaults"] == {"step_norm": 1.0}
    assert given["mask_size"] == int(0.05 * given["unlearn_adapter_params"])
    plain = run_unlearning(_cfg(toy, "hdsu", settings=QUICK, unlearn_lora_r=None))["info"]
    assert "lora_defaults" not in plain
    assert plain["mask_size"] == int(0.001 * sum(p.numel() for p in original.parameters()))
    npo = run_unlearning(_cfg(toy, "npo"))["info"]  # a method without LoRA defaults records none
    assert "lora_defaults" not in npo
