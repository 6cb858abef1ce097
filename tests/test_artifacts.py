"""The unlearned model as the run's output: sparse delta, receipt, export (Hugging Face and GGUF),
verify, rollback, chained runs and deleting files.

Real runs use the cached demo model with a two-step gradient ascent (a dense change: every kind of
tensor is in the delta); the files go to the session's temporary HDSU_RUN_MODELS (conftest).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch

from hdsu_core.artifacts import run_models as RM
from hdsu_core.artifacts.actions import export_run_model, rollback_run_model, verify_model
from hdsu_core.artifacts.delta import apply_delta, compute_delta, load_delta, save_delta
from hdsu_core.artifacts.receipt import receipt_sha256
from hdsu_core.cli import main
from hdsu_core.engine import RunConfig, load_hierarchy, load_items, probe_all
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.models import load_model
from hdsu_core.store import Store
from hdsu_core.tagging import make_split
from hdsu_core.weight_hashes import first_mismatch, hash_state

QUICK = {"method": "grad_ascent", "settings": {"max_steps": 2}, "n_generations": 2}


def quick_run(store: Store, forget: list[str], **kw) -> str:
    cfg = RunConfig(forget=forget, **{**QUICK, **kw})
    run_id = create_run(store, cfg, author="alice")
    execute_run(store, run_id, executor="cli")
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return Store(tmp_path_factory.mktemp("db") / "h.duckdb")


@pytest.fixture(scope="module")
def run1(store) -> str:
    return quick_run(store, ["anxiety"])


@pytest.fixture(scope="module")
def exported(store, run1, tmp_path_factory) -> Path:
    return export_run_model(store, run1, "hf", tmp_path_factory.mktemp("exp") / "model", actor="alice")


def actions(store: Store, run_id: str) -> list[str]:
    return list(store.audit_events(run_id)["action"])[::-1]


# ---- delta and hashes on constructed tensors ------------------------------------------------


def test_delta_is_bit_exact_both_ways(tmp_path):
    before = {
        "a": torch.tensor([0.0, 1.0, float("nan"), 3.0]),
        "b": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        "c": torch.ones(3),
    }
    after = {k: v.clone() for k, v in before.items()}
    after["a"][0] = -0.0  # equal as a value, different bits: still a change
    after["a"][3] = 2.5
    after["b"][1, 2] = 7.25
    delta = compute_delta(before, after)
    assert set(delta) == {"a", "b"}  # "c" did not change
    assert delta["a"].indices.tolist() == [0, 3]
    save_delta(delta, tmp_path / "d.safetensors", {"k": "v"})
    loaded, header = load_delta(tmp_path / "d.safetensors")
    assert header["k"] == "v"
    state = {k: v.clone() for k, v in before.items()}
    apply_delta(state, loaded)
    assert hash_state(state).root == hash_state(after).root
    apply_delta(state, loaded, reverse=True)
    assert hash_state(state).root == hash_state(before).root


def test_hashes_name_the_first_changed_tensor():
    a = {"x": torch.zeros(2), "y": torch.ones(2), "z": torch.ones(2)}
    b = {**a, "y": torch.tensor([1.0, 1.0 + 1e-7]), "z": torch.zeros(2)}
    ha, hb = hash_state(a), hash_state(b)
    assert ha.root != hb.root
    assert first_mismatch(ha.tensors, hb.tensors) == "y"
    assert first_mismatch(ha.tensors, hash_state(dict(a)).tensors) is None
    # shape is part of a tensor's hash: the same bytes in another shape differ
    assert hash_state({"x": torch.zeros(4)}).root != hash_state({"x": torch.zeros(2, 2)}).root


# ---- a finished run's receipt and files --------------------------------------------------------


def test_every_finished_run_has_its_receipt_and_delta(store, run1):
    rm = RM.get_run_model(store, run1)
    r = rm.receipt
    on_disk = json.loads((Path(rm.files_dir) / RM.RECEIPT_FILE).read_text())
    assert on_disk == r and receipt_sha256(on_disk) == store.get_run_model(run1)["receipt_sha256"]
    run = store.get_run(run1)
    assert r["original"]["root"][:16] == run["model_hash"]
    assert r["original"]["model"].endswith(Path(r["original"]["model"]).name) and "demo-" in r["original"]["model"]
    assert r["unlearned"]["root"] != r["original"]["root"]
    assert r["config_hash"] == run["config_hash"] and r["actor"] == "alice"
    assert r["items"]["n_forget"] == run["summary"]["n_forget"] and len(r["items"]["forget_sha256"]) == 64
    assert len(r["hierarchy"]["sha256"]) == 64 and r["code_version"].startswith(("git:", "package:", "unknown"))
    assert r["compute"] == {"device": "cpu", "dtype": "float32"}
    assert r["metrics"]["forget_acc_after"] == pytest.approx(store.metrics(run1)["forget_acc_after"])
    assert r["delta"]["changed_weights"] == run["summary"]["changed_weights"]
    assert set(r["unlearned"]["tensors"]) == set(r["original"]["tensors"])


def test_original_plus_delta_is_unlearned_and_back(store, run1):
    rm = RM.get_run_model(store, run1)
    assert RM.materialize(store, run1).model_hash == rm.unlearned.root[:16]
    back = RM.rollback(store, run1)
    assert hash_state(back.model.state_dict()).root == rm.original.root


def test_export_loads_without_hdsu_and_reproduces_the_after_probe(store, run1, exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(exported, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    mine = RM.materialize(store, run1).model
    ids = torch.tensor([tok("Question: What is anxiety?\nAnswer:")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, mine(input_ids=ids).logits, atol=1e-6)
    cfg = RunConfig.from_dict(store.get_run(run1)["config"])
    split = make_split(load_items(cfg.dataset), load_hierarchy(cfg), cfg.forget, seed=cfg.seed)
    scores = probe_all(plain, tok, split, max_len=int(load_model(exported).meta["recipe"]["max_len"]))
    stored = store.probe_results(run1, "after")
    for part in ("forget", "retain", "holdout"):
        want = stored[stored["split"] == part].set_index("item_id")
        for row in scores[part]:
            assert bool(row["correct"]) == bool(want.loc[row["item_id"], "correct"])
            assert row["loss"] == pytest.approx(want.loc[row["item_id"], "loss"], abs=1e-5)
    assert "model_export" in actions(store, run1)


def test_verify_names_the_receipt_and_the_first_tampered_tensor(store, run1, exported, tmp_path):
    from safetensors.torch import load_file, save_file

    assert verify_model(store, run1, exported, actor="bob").matches == "unlearned"
    rolled = rollback_run_model(store, run1, tmp_path / "orig", source=exported, actor="bob")
    assert verify_model(store, run1, rolled, actor="bob").matches == "original"
    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-r", str(exported), str(tampered)], check=True)
    weights = load_file(tampered / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    weights[name][0, 0] += 1e-3
    save_file(weights, tampered / "model.safetensors", metadata={"format": "pt"})
    v = verify_model(store, run1, tampered, actor="bob")
    assert (v.matches, v.first_mismatch) == ("none", name)
    assert main(["model", "verify", run1, str(tampered), "--db", str(store.path)]) == 1
    assert main(["model", "verify", run1, str(exported), "--db", str(store.path)]) == 0
    with pytest.raises(RM.RunModelError, match=name):  # rollback refuses a model that is not the run's
        rollback_run_model(store, run1, tmp_path / "x", source=tampered, actor="bob")
    assert {"model_verify", "model_rollback"} <= set(actions(store, run1))


def test_gguf_export_loads_through_the_project_loader_with_equal_weights(store, run1, tmp_path):
    pytest.importorskip("gguf", reason="the gguf package writes GGUF files")
    path = export_run_model(store, run1, "gguf", tmp_path / "m.gguf", actor="alice")
    assert path.suffix == ".gguf"
    rm = RM.get_run_model(store, run1)
    assert hash_state(load_model(path).model.state_dict()).root == rm.unlearned.root
    assert verify_model(store, run1, path, actor="alice").matches == "unlearned"


def test_a_changed_delta_or_receipt_is_refused(store, tmp_path):
    run = quick_run(store, ["trauma"])
    rm = RM.get_run_model(store, run)
    delta_path = Path(rm.files_dir) / RM.DELTA_FILE
    good = delta_path.read_bytes()
    delta_path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(RM.RunModelError, match="altered"):
        RM.materialize(store, run)
    delta_path.write_bytes(good)
    assert RM.materialize(store, run).model_hash == rm.unlearned.root[:16]
    con = duckdb.connect(str(store.path))  # someone edits the stored receipt by hand
    con.execute(
        'UPDATE run_models SET receipt_json = replace(receipt_json, \'"actor":"alice"\', \'"actor":"eve"\') '
        "WHERE run_id = ?",
        [run],
    )
    con.close()
    with pytest.raises(RM.RunModelError, match="edited"):
        RM.get_run_model(store, run)


# ---- chained requests --------------------------------------------------------------------


def test_a_chain_records_lineage_rolls_back_one_step_and_guards_deletes(store, run1, capsys):
    code = main(
        ["run", "--db", str(store.path), "--quiet", "--from-run", run1, "--forget", "depression"]
        + ["--method", "grad_ascent", "--set", "max_steps=2", "--json"]
    )
    assert code == 0
    run2 = json.loads(capsys.readouterr().out)["run_id"]
    r1, r2 = RM.get_run_model(store, run1), RM.get_run_model(store, run2)
    assert r2.receipt["original"]["run"] == run1 and r2.original.root == r1.unlearned.root
    chain = RM.lineage(store, run2)
    assert [c.get("run") for c in chain] == [None, run1, run2] and chain[0]["root"] == r1.original.root
    assert hash_state(RM.rollback(store, run2).model.state_dict()).root == r1.unlearned.root
    from hdsu_core.audit import build_html

    report = build_html(store, run2, None, log=False)  # the audit report shows the chain
    part = report[report.index("Lineage, oldest first") :]
    assert part.index(r1.original.root[:32]) < part.index(run1) < part.index(r2.unlearned.root[:32])
    main(["model", "list", "--db", str(store.path)])
    listing = capsys.readouterr().out.splitlines()
    i1 = next(i for i, ln in enumerate(listing) if run1 in ln)
    i2 = next(i for i, ln in enumerate(listing) if run2 in ln)
    assert i2 > i1 and listing[i2].index("└") > listing[i1].index("└")  # run 2 sits under run 1
    with pytest.raises(RM.RunModelError, match=run2):  # run 2 still needs run 1's files
        RM.delete_run_files(store, run1, "alice")
    assert RM.delete_run_files(store, run2, "alice") > 0
    assert not Path(r2.files_dir).exists()
    with pytest.raises(RM.RunModelError, match="deleted; its receipt remains"):
        RM.materialize(store, run2)
    assert RM.get_run_model(store, run2).receipt == r2.receipt  # the receipt stays provable
    assert "model_files_deleted" in actions(store, run2)


def test_from_run_without_files_is_refused_before_a_row_exists(store, capsys):
    bench_like = quick_run(store, ["ocd"], keep_model=False)
    assert RM.get_run_model(store, bench_like).receipt["delta"] is None
    n = len(store.list_runs())
    code = main(["run", "--db", str(store.path), "--quiet", "--from-run", bench_like, "--forget", "anxiety"])
    assert code == 1 and "kept no model files" in capsys.readouterr().err
    assert len(store.list_runs()) == n


# ---- a killed writer -----------------------------------------------------------------------

KILLED_WRITER = """
import os, signal, torch
from hdsu_core.artifacts import run_models as RM, delta as D
real = D.save_delta
def save_then_die(delta, path, meta):
    real(delta, path, meta)
    os.kill(os.getpid(), signal.SIGKILL)  # killed between the delta and the receipt
RM.save_delta = save_then_die
before = {"w": torch.zeros(4)}; after = {"w": torch.ones(4)}
RM.write_run_files("r-killed", D.compute_delta(before, after), {}, lambda info: {"delta": info})
"""


def test_a_killed_run_leaves_no_half_written_model_directory(tmp_path, monkeypatch):
    env = {"HDSU_RUN_MODELS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER], env=env, cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    assert not (tmp_path / "r-killed").exists()  # no model directory, not even an empty one
    assert [p.name for p in tmp_path.iterdir()][0].startswith(".tmp-r-killed-")
    monkeypatch.setenv("HDSU_RUN_MODELS", str(tmp_path))
    assert RM.sweep_stale_tmp() and not list(tmp_path.iterdir())  # the process is gone: swept
