"""LoRA (peft) and DP-SGD (opacus) knowledge injection on a 32-wide one-layer Llama: only the
adapters train and their counts are exact, the merge is base + adapter delta, DP reports the
epsilon it spent and is seeded, bad settings are one-line refusals, and a run with --inject
--inject-lora goes through the engine to a receipt with a training block."""

from __future__ import annotations

import pytest
import torch

from hdsu_core import datasets, lora
from hdsu_core.artifacts.run_models import get_run_model
from hdsu_core.audit.procedure import procedure_rows
from hdsu_core.cli import main
from hdsu_core.demo_kb import write_jsonl
from hdsu_core.encoding import qa_texts
from hdsu_core.engine import RunConfig, check_run_options
from hdsu_core.hierarchy import load_default
from hdsu_core.store import Store
from hdsu_core.training import inject_knowledge, tiny_llama, train_qa, train_tokenizer

BASE = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "max_len": 64}
# A short fine-tune: a few epochs of small batches (seconds on a shared CPU).
QUICK = {"lr": 1e-2, "batch": 8, "max_epochs": 3, "target_acc": 1.01, "eval_every": 3, "max_len": 64}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """~60 demo items (anxiety and part of depression / surgery) as a JSONL file, a tokenizer
    trained on them and an untrained base model saved as a local HF directory; the model cache
    in a temporary HDSU_HOME."""
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("HDSU_HOME", str(home))
    h = load_default()
    keep = (
        set(h.subtree("anxiety")) | set(sorted(h.subtree("depression"))[:10]) | set(sorted(h.subtree("surgery"))[:10])
    )
    items = [it for it in datasets.load("demo").items if it.labels["concept_id"] in keep][:60]
    path = home / "toy.jsonl"
    write_jsonl(items, path)
    tok = train_tokenizer(qa_texts(items), 800)
    torch.manual_seed(0)
    base = home / "base"
    tiny_llama(len(tok), BASE, tok).save_pretrained(base)
    tok.save_pretrained(base)
    yield {"items": items, "path": path, "tok": tok, "base": base, "home": home}
    mp.undo()


def _adapter_count(hidden: int, inter: int, r: int, layers: int = 1) -> int:
    """A rank-r adapter of an (out, in) matrix has r * (in + out) elements."""
    attention = 4 * r * (hidden + hidden)
    mlp = 2 * r * (hidden + inter) + r * (inter + hidden)
    return layers * (attention + mlp)


def test_lora_trains_only_adapters_and_the_merge_is_base_plus_delta(toy):
    torch.manual_seed(0)
    model = tiny_llama(len(toy["tok"]), BASE, toy["tok"])
    base = lora.snapshot(model)
    wrapped = lora.wrap(model, 4)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert lora.trainable_params(wrapped) == _adapter_count(32, 64, 4) == 2176
    train_qa(wrapped, toy["tok"], toy["items"][:16], seed=0, progress=lambda *a: None, **_quick(max_epochs=2))
    # The frozen base weights did not move; the merge adds scaling * B @ A to each adapted one.
    expected = {}
    for name, mod in wrapped.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            key = name.removeprefix("base_model.model.") + ".weight"
            delta = mod.lora_B["default"].weight @ mod.lora_A["default"].weight * mod.scaling["default"]
            assert torch.equal(mod.base_layer.weight.detach(), base[key])
            expected[key] = (base[key] + delta).detach()
    assert len(expected) == 7  # q, k, v, o, gate, up, down
    merged = lora.merge(wrapped)
    assert type(merged).__name__ == "LlamaForCausalLM"
    state = merged.state_dict()
    assert set(state) == set(base)
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)
    changed = lora.weights_changed(base, merged)
    assert changed == sum(int((state[k] != base[k]).sum()) for k in base)
    assert 0 < changed <= sum(base[k].numel() for k in expected)
    assert all(torch.equal(state[k], base[k]) for k in base if k not in expected)


def _quick(**over) -> dict:
    q = {**QUICK, **over}
    return {k: q[k] for k in ("lr", "batch", "max_epochs", "target_acc", "eval_every", "max_len")}


def test_lora_injection_reports_exact_counts_and_is_cached(toy, tmp_path):
    recipe = {**QUICK, "lora_r": 4}
    b = inject_knowledge(toy["items"], name="t", base=toy["base"], recipe=recipe, cache_dir=tmp_path)
    assert b.meta["lora_r"] == 4 and b.meta["adapter_params_trained"] == 2176
    assert b.meta["merged_weights_changed"] == 4 * 32 * 32 + 3 * 32 * 64  # every adapted element moved
    again = inject_knowledge(toy["items"], name="t", base=toy["base"], recipe=recipe, cache_dir=tmp_path)
    assert again.path == b.path
    other = inject_knowledge(
        toy["items"], name="t", base=toy["base"], recipe={**recipe, "lora_r": 2}, cache_dir=tmp_path
    )
    assert other.path != b.path and other.meta["adapter_params_trained"] == _adapter_count(32, 64, 2)


def test_dp_injection_spends_at_most_its_epsilon_and_is_seeded(toy, tmp_path):
    recipe = {**QUICK, "lora_r": 4, "dp_epsilon": 4.0}
    items = toy["items"][:32]  # per-item gradients are the slow part: fewer items
    a = inject_knowledge(items, name="dp", base=toy["base"], recipe=recipe, cache_dir=tmp_path / "a")
    assert 0 < a.meta["dp_epsilon"] <= 4.0 * 1.05
    assert a.meta["dp_delta"] == 1e-5 and a.meta["dp_clip"] == 1.0
    assert a.meta["recipe"]["dp_delta"] == 1e-5  # the default written out: one cache entry for both
    b = inject_knowledge(items, name="dp", base=toy["base"], recipe=recipe, cache_dir=tmp_path / "b")
    assert a.model_hash == b.model_hash  # same seed, same weights
    spelled_out = {**recipe, "dp_delta": 1e-5, "dp_clip": 1.0}
    assert (
        inject_knowledge(items, name="dp", base=toy["base"], recipe=spelled_out, cache_dir=tmp_path / "a").path
        == a.path
    )
    plain = inject_knowledge(
        items, name="dp", base=toy["base"], recipe={**QUICK, "lora_r": 4}, cache_dir=tmp_path / "a"
    )
    assert plain.model_hash != a.model_hash  # the noise and clipping did change the training
    with pytest.raises(ValueError, match="DP-SGD injection needs LoRA"):
        inject_knowledge(
            toy["items"], name="dp", base=toy["base"], recipe={**QUICK, "dp_epsilon": 4.0}, cache_dir=tmp_path
        )


@pytest.mark.parametrize(
    ("recipe", "inject", "message"),
    [
        ({"lora_r": 0}, True, "lora_r=0 refused: .*; lora_r must be an integer >= 1"),
        ({"lora_r": 2.5}, True, "lora_r=2.5 refused"),
        ({"lora_r": 4, "dp_epsilon": 0}, True, "dp_epsilon=0 refused"),
        ({"lora_r": 4, "dp_epsilon": -1.0}, True, "dp_epsilon=-1.0 refused"),
        ({"lora_r": 4, "dp_epsilon": 4.0, "dp_delta": 1.5}, True, "dp_delta=1.5 refused"),
        ({"lora_r": 4, "dp_epsilon": 4.0, "dp_clip": 0.0}, True, "dp_clip=0.0 refused"),
        ({"dp_epsilon": 4.0}, True, "DP-SGD injection needs LoRA"),
        ({"lora_r": 4, "dp_delta": 1e-6}, True, "refused without dp_epsilon"),
        ({"lora_r": 4}, False, "lora_r refused: they shape the knowledge injection; use --inject"),
    ],
)
def test_bad_training_settings_are_one_line_refusals(toy, recipe, inject, message):
    cfg = RunConfig(forget=["anxiety"], model=str(toy["base"]), inject=inject, recipe=recipe)
    with pytest.raises(ValueError, match=message) as e:
        check_run_options(cfg)
    assert "\n" not in str(e.value)


def test_cli_refuses_a_bad_rank_before_a_run_row_exists(toy, tmp_path, capsys):
    db = tmp_path / "h.duckdb"
    argv = ["run", "--model", str(toy["base"]), "--inject", "--inject-lora", "0", "--db", str(db), "--quiet"]
    assert main(argv + ["--dataset", f"demo:{toy['path']}", "--forget", "anxiety", "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lora_r=0 refused") and "\n" not in err
    assert Store(str(db)).list_runs().empty


def test_a_run_with_lora_injection_goes_through_the_engine_to_the_receipt(toy, tmp_path, capsys):
    db = str(tmp_path / "h.duckdb")
    argv = ["run", "--dataset", f"demo:{toy['path']}", "--forget", "anxiety", "--model", str(toy["base"])]
    argv += ["--inject", "--inject-lora", "4", "--inject-dp-epsilon", "8"]
    argv += [f"--inject-set={k}={v}" for k, v in QUICK.items()]
    argv += ["--method", "grad_ascent", "--set", "max_steps=2", "--device", "cpu", "--db", db, "--quiet", "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    store = Store(db)
    run_id = store.list_runs().iloc[0]["run_id"]
    info = store.get_run(run_id)["summary"]["info"]
    assert info["lora_r"] == 4 and info["adapter_params_trained"] == 2176
    assert info["merged_weights_changed"] > 0 and 0 < info["dp_epsilon"] <= 8 * 1.05
    training = get_run_model(store, run_id).receipt["training"]
    assert training == {k: info[k] for k in training}
    assert set(training) == {
        "lora_r",
        "adapter_params_trained",
        "merged_weights_changed",
        "dp_epsilon",
        "dp_delta",
        "dp_clip",
    }
    rows = {r["label"]: r["value"] for r in procedure_rows(info)}  # the audit report's procedure table
    assert rows["Injection (LoRA)"].startswith("rank 4, 2,176 adapter parameters trained")
    assert rows["Injection (DP-SGD)"].startswith(f"epsilon {info['dp_epsilon']:.3f} spent at delta 1e-05")
