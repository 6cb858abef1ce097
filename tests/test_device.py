"""Device selection: a run computes where the user asks (``auto``: a CUDA GPU when torch sees
one, else the CPU); a device that is not there is refused up front with one clear line and
nothing recorded; the CPU path (the one CI runs) gives the same numbers asked for explicitly or
through ``auto``. The CUDA path is the same code with tensors placed on the model's device."""

from __future__ import annotations

import pytest
import torch
from test_methods import toy  # noqa: F401  (module-scoped toy data set and recipe)

from hdsu_core import audit, jobs
from hdsu_core.cli import main
from hdsu_core.compute import ModelError, available_devices, model_device, resolve_device, resolve_dtype
from hdsu_core.engine import RunConfig, run_unlearning
from hdsu_core.metrics import changed_fraction
from hdsu_core.store import Store
from hdsu_core.training import tiny_llama

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto") == resolve_device(" AUTO ")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("spec", ["gpu", "tpu", "cuda:x", ""])
def test_unknown_device_is_refused(spec):
    if spec == "":  # empty means the default
        assert resolve_device(spec) == resolve_device("auto")
        return
    with pytest.raises(ModelError, match="not a device"):
        resolve_device(spec)


@no_gpu
def test_missing_gpu_is_refused_with_the_reason():
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ModelError, match="torch sees no CUDA GPU.*use --device cpu or auto"):
            resolve_device(spec)


@no_gpu
def test_cli_refuses_a_missing_gpu_before_recording_a_run(tmp_path, capsys):
    db = tmp_path / "h.duckdb"
    assert main(["run", "--device", "cuda", "--db", str(db), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: device 'cuda' requested, but torch sees no CUDA GPU")
    assert "Traceback" not in err
    assert Store(db).list_runs().empty
    assert main(["bench", "--device", "cuda:1", "--db", str(db), "--quiet"]) == 1
    assert "torch sees no CUDA GPU" in capsys.readouterr().err


def test_cli_missing_model_is_one_clear_line(tmp_path, capsys):
    assert main(["run", "--model", str(tmp_path / "nope"), "--db", str(tmp_path / "h.duckdb"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model not found:") and "Traceback" not in err


@no_gpu
def test_launch_refuses_a_missing_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("HDSU_HOME", str(tmp_path))
    store = Store(tmp_path / "h.duckdb")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        jobs.launch(RunConfig(forget=["anxiety"], device="cuda"), store=store, author="tester")
    assert store.list_runs().empty


def test_unlearn_page_offers_only_devices_that_exist():
    opts = available_devices()
    assert list(opts)[:2] == ["auto", "cpu"]
    gpus = [k for k in opts if k.startswith("cuda:")]
    assert len(gpus) == torch.cuda.device_count()
    for k in opts:
        resolve_device(k)  # every offered device resolves


def test_changed_fraction_with_a_cpu_snapshot():
    a = {"w": torch.zeros(10), "step": torch.tensor(3)}
    b = {"w": torch.zeros(10), "step": torch.tensor(4)}
    b["w"][[1, 7]] = 1.0
    assert changed_fraction(a, b) == (2, 10)


def test_model_device_of_a_model():
    class _Tok:
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    m = tiny_llama(50, {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "max_len": 16}, _Tok())
    assert model_device(m) == torch.device("cpu")


def test_explicit_cpu_run_matches_auto_on_cpu_and_records_the_device(toy):  # noqa: F811
    base = {**toy["cfg"].to_dict(), "settings": {"max_steps": 10}}
    explicit = run_unlearning(RunConfig(**{**base, "device": "cpu"}))
    assert explicit["info"]["device"] == "cpu"
    rows = {r["label"]: r["value"] for r in audit.procedure_rows(explicit["info"])}
    assert rows["Device"] == "cpu"
    if torch.cuda.is_available():
        pytest.skip("auto resolves to the GPU on this machine")
    auto = run_unlearning(RunConfig(**base))
    keys = ["forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights", "steps", "ppl_after"]
    assert {k: explicit[k] for k in keys} == {k: auto[k] for k in keys}


def test_resolve_dtype():
    assert resolve_dtype(None) == resolve_dtype("float32") == torch.float32
    assert resolve_dtype(" BFloat16 ", torch.device("cpu")) == torch.bfloat16
    for bad in ("float16", "fp8", "half"):
        with pytest.raises(ModelError, match="use float32 or bfloat16"):
            resolve_dtype(bad)


def test_bfloat16_run_forgets_within_the_mask_and_is_deterministic(toy):  # noqa: F811
    """The bfloat16 path (a large model on a GPU) on the CPU toy: it still forgets, only masked
    weights change, and the same config gives the same numbers."""
    cfg = RunConfig(**{**toy["cfg"].to_dict(), "dtype": "bfloat16", "device": "cpu", "settings": {"max_steps": 30}})
    a = run_unlearning(cfg)
    assert a["info"]["dtype"] == "bfloat16"
    rows = {r["label"]: r["value"] for r in audit.procedure_rows(a["info"])}
    assert rows["Weight precision"] == "bfloat16"
    assert a["forget_acc_after"] < a["forget_acc_before"] - 0.3
    assert 0 < a["changed_weights"] <= a["info"]["mask_size"]
    b = run_unlearning(cfg)
    keys = ["forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights", "steps"]
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


def test_cli_refuses_an_unknown_dtype(tmp_path, capsys):
    assert main(["run", "--dtype", "float16", "--device", "cpu", "--db", str(tmp_path / "h.duckdb"), "--quiet"]) == 1
    assert "error: dtype 'float16': use float32 or bfloat16" in capsys.readouterr().err


def test_bench_on_a_given_model_with_injection_has_a_retrain_reference(toy, tmp_path, capsys):  # noqa: F811
    """`bench --model DIR --inject`: HDSU fine-tunes the given model on the dataset (the original)
    and, for the retrain reference, on the retained members only; both cached. Without --inject
    a given model has no retrain reference: refused in one line unless --no-retrain."""
    import json as _json

    from hdsu_core.engine import prepare_model

    tok = prepare_model(toy["cfg"], toy["items"], lambda *a: None).tokenizer
    base = tmp_path / "base"
    recipe = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "max_len": 64}
    tiny_llama(len(tok), recipe, tok).save_pretrained(base)
    tok.save_pretrained(base)
    db = str(tmp_path / "b.duckdb")
    common = [
        "bench",
        "--dataset",
        f"demo:{toy['path']}",
        "--model",
        str(base),
        "--methods",
        "hdsu",
        "--forget",
        "anxiety",
        "--device",
        "cpu",
        "--db",
        db,
        "--quiet",
    ]
    assert main(common) == 1
    assert "no retrain reference for" in capsys.readouterr().err
    assert main(common + ["--inject", "--json"]) == 0
    rows = _json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["retrain", "hdsu"]
    ref, run = rows
    for r in rows:
        assert 0.0 <= r["forget_acc_after"] <= 1.0 and 0.0 <= r["retain_acc_after"] <= 1.0
    assert ref["changed_fraction"] == 1.0 and run["changed_fraction"] <= 0.0011
    assert Store(db).list_runs().iloc[0]["model"] == str(base)
    assert main(common + ["--no-retrain"]) == 0  # used as it is, without a reference
