"""A run over several processes (torchrun, gloo on the CPU) gives what the one-process run gives:
the same mask, the same weights (to float32 rounding), the same metrics; it goes through the
worker the Runs page launches, and it can be cancelled. Plus the pure logic of the sharding."""

from __future__ import annotations

import json
import time

import pytest
import torch
from test_methods import toy  # noqa: F401  (module-scoped toy data set and recipe)

from hdsu_core import audit, distributed, jobs, liveness
from hdsu_core.artifacts.run_models import materialize
from hdsu_core.cli import main
from hdsu_core.engine import RunConfig, check_run_options, prepare_model
from hdsu_core.lifecycle import create_run, execute_run
from hdsu_core.progress import no_progress
from hdsu_core.ranks import torchrun_command
from hdsu_core.store import RunStatus, Store

# A couple of steps on the toy model; no repair / settle (each is a few more steps of the same kind).
SETTINGS = {
    "hdsu": {"max_steps": 3, "check_every": 2, "repair_steps": 0, "settle_steps": 0},
    "grad_diff": {"max_steps": 3, "check_every": 2},
}
SAME_METRICS = [
    "forget_acc_after",
    "retain_acc_after",
    "holdout_acc_after",
    "mia_auc",
    "changed_weights",
    "total_weights",
    "steps",
]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10])
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_shards_cover_every_row_once(n, ranks):
    rows = [i for r in range(ranks) for i in range(*distributed.shard_bounds(n, ranks, r))]
    assert rows == list(range(n))
    sizes = [b - a for a, b in (distributed.shard_bounds(n, ranks, r) for r in range(ranks))]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_helpers_are_the_plain_computation():
    assert not distributed.active() and distributed.world() == 1 and distributed.is_main()
    v = torch.tensor([1.0, 2.0, 6.0])
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert torch.equal(distributed.shard_mean(v, 99), v.mean())  # one process: the whole batch's mean
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.union({3, 1}) == {1, 3}
    assert distributed.auto_processes(torch.device("cpu")) == 1


def test_processes_is_checked_and_does_not_change_the_config_hash():
    cfg = RunConfig(forget=["anxiety"])
    assert RunConfig(forget=["anxiety"], processes=2).hash() == cfg.hash()
    for bad in (0, -1, 65, 1.5):
        with pytest.raises(ValueError, match="processes="):
            check_run_options(RunConfig(forget=["anxiety"], processes=bad))
    assert RunConfig(forget=["anxiety"], processes=2, unlearn_lora_r=4, fsdp=True).hash() == (
        RunConfig(forget=["anxiety"], unlearn_lora_r=4).hash()
    )
    for bad, message in (
        ({"processes": 2}, "fsdp refused without LoRA unlearning"),
        ({"unlearn_lora_r": 4}, "fsdp refused with processes=1"),
        ({"processes": 2, "unlearn_lora_r": 4, "attacks": ["quant"]}, "fsdp refused with attacks"),
    ):
        with pytest.raises(ValueError, match=message):
            check_run_options(RunConfig(forget=["anxiety"], fsdp=True, **bad))
    cmd = torchrun_command("r1", "/tmp/x.duckdb", 2)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[5:] == ["-m", "hdsu_core", "worker", "r1", "--db", "/tmp/x.duckdb"]


def _state(store: Store, run_id: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in materialize(store, run_id).model.state_dict().items()}


def _base(toy, method: str) -> dict:  # noqa: F811
    return {**toy["cfg"].to_dict(), "method": method, "settings": SETTINGS[method], "device": "cpu"}


@pytest.mark.parametrize(("method", "lora_r"), [("hdsu", None), ("grad_diff", None), ("grad_diff", 4)])
def test_two_gloo_processes_match_one_process(toy, tmp_path, method, lora_r):  # noqa: F811
    """The two-process run goes through jobs.worker_main (the Runs page's worker): it launches
    torchrun; rank 0 writes the results, the receipt and the delta. With LoRA unlearning every
    process starts from the same adapters, so the merged models match too."""
    store = Store(tmp_path / "h.duckdb")
    base = {**_base(toy, method), "unlearn_lora_r": lora_r}
    one = create_run(store, RunConfig(**base), author="tester")
    execute_run(store, one, executor="test")
    two = create_run(store, RunConfig(**{**base, "processes": 2}), author="tester")
    assert jobs.worker_main(two, str(store.path)) == 0
    a, b = store.get_run(one), store.get_run(two)
    assert b["status"] == RunStatus.DONE, b["error"]
    sa, sb = a["summary"], b["summary"]
    assert sa["info"]["processes"] == 1 and sb["info"]["processes"] == 2
    assert {k: sa[k] for k in SAME_METRICS} == {k: sb[k] for k in SAME_METRICS}
    assert sa["steps"] == 3 and sa["changed_weights"] > 0
    assert sa["info"].get("unlearn_lora_r") == lora_r == sb["info"].get("unlearn_lora_r")
    if method == "hdsu":
        assert sa["info"]["mask_sha256"] == sb["info"]["mask_sha256"]  # the very same weights selected
        assert sa["info"]["mask_by_param"] == sb["info"]["mask_by_param"]
    original = {
        k: v.float() for k, v in prepare_model(toy["cfg"], toy["items"], no_progress).model.state_dict().items()
    }
    wa, wb = _state(store, one), _state(store, two)
    assert max(float((wa[k] - original[k]).abs().max()) for k in wa) > 1e-3  # far more than the tolerance
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-5, msg=k)
    assert b["config_hash"] == a["config_hash"]
    rows = {r["label"]: r["value"] for r in audit.procedure_rows(sb["info"])}  # the report says how it ran
    assert rows["Processes"] == "2 (data-parallel, torchrun)"
    assert "Processes" not in {r["label"] for r in audit.procedure_rows(sa["info"])}


@pytest.mark.parametrize(("method", "checkpointing"), [("hdsu", False), ("npo", False), ("hdsu", True)])
def test_a_sharded_base_over_two_processes_matches_the_one_process_lora_run(toy, tmp_path, method, checkpointing):  # noqa: F811
    """--fsdp: the frozen base sharded over two gloo processes (FSDP2), the LoRA adapters in every
    process. Each process holds about half the weights, and the run is the one-process LoRA run:
    the same mask, metrics, probes and merged model, gathered whole into rank 0's receipt and delta."""
    store = Store(tmp_path / "h.duckdb")
    settings = SETTINGS.get(method, {"max_steps": 3, "check_every": 2})
    base = {**_base(toy, "hdsu"), "method": method, "settings": settings, "unlearn_lora_r": 4}
    base["gradient_checkpointing"] = checkpointing
    one = create_run(store, RunConfig(**base), author="tester")
    execute_run(store, one, executor="test")
    two = create_run(store, RunConfig(**{**base, "processes": 2, "fsdp": True}), author="tester")
    assert jobs.worker_main(two, str(store.path)) == 0
    a, b = store.get_run(one), store.get_run(two)
    assert b["status"] == RunStatus.DONE, b["error"]
    sa, sb = a["summary"], b["summary"]
    assert {k: sa[k] for k in SAME_METRICS} == {k: sb[k] for k in SAME_METRICS}
    assert sa["changed_weights"] > 0 and b["config_hash"] == a["config_hash"]
    assert sb["info"]["fsdp"] is True and "fsdp" not in sa["info"]
    assert sa["info"]["gradient_checkpointing"] is sb["info"]["gradient_checkpointing"] is checkpointing
    adapters = sb["info"]["unlearn_adapter_params"]
    held = sb["info"]["weights_per_process"]  # half the base (rounded up per tensor) and every adapter
    assert sa["total_weights"] // 2 + adapters <= held < sa["total_weights"] // 2 + adapters + 2_000
    if method == "hdsu":
        assert sa["info"]["mask_sha256"] == sb["info"]["mask_sha256"]
    for phase in ("before", "after"):  # every process probed the sharded model; rank 0 wrote it
        pa, pb = store.probe_results(one, phase), store.probe_results(two, phase)
        assert list(pa["item_id"]) == list(pb["item_id"]) and list(pa["pred"]) == list(pb["pred"])
        assert float((pa["loss"] - pb["loss"]).abs().max()) < 1e-4
    wa, wb = _state(store, one), _state(store, two)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-5, msg=k)
    rows = {r["label"]: r["value"] for r in audit.procedure_rows(sb["info"])}
    assert rows["Processes"] == "2 (FSDP: the base sharded, torchrun)"


@pytest.mark.parametrize("sharded", [False, True])
def test_a_two_process_run_from_the_runs_page_is_cancellable(toy, tmp_path, sharded):  # noqa: F811
    """jobs.launch (the Unlearn page's Launch) of a long two-process run, then jobs.cancel (the
    Runs page's Cancel) while it steps: every process stops and the run is marked cancelled;
    also with the base sharded (--fsdp), where every process computes every step."""
    store = Store(tmp_path / "h.duckdb")
    long = {"max_steps": 100_000, "check_every": 100_000, "time_budget_s": 600.0}
    sharding = {"unlearn_lora_r": 4, "fsdp": True} if sharded else {}
    cfg = RunConfig(**{**_base(toy, "grad_diff"), "settings": long, "processes": 2, **sharding})
    run_id = jobs.launch(cfg, store=store, author="tester")
    deadline = time.time() + 90
    while time.time() < deadline and "unlearn" not in set(store.progress_log(run_id)["phase"]):
        time.sleep(0.5)
    assert store.get_run(run_id)["status"] == RunStatus.RUNNING
    assert jobs.cancel(run_id, store=store, actor="tester") == "cancelling"
    while time.time() < deadline and store.get_run(run_id)["status"] == RunStatus.RUNNING:
        time.sleep(0.5)
    row = store.get_run(run_id)
    assert row["status"] == RunStatus.CANCELLED, row
    while time.time() < deadline + 30 and liveness.pid_alive(row["pid"]):  # rank 0 leaves the group and exits
        time.sleep(0.5)
    assert not liveness.pid_alive(row["pid"])
    while time.time() < deadline + 30 and jobs.cancel_flag(run_id).exists():
        time.sleep(0.5)
    assert not jobs.cancel_flag(run_id).exists()  # the launcher removed it when torchrun returned


def test_cli_run_with_two_processes(toy, tmp_path, capsys):  # noqa: F811
    """`run --processes 2` in the foreground (torchrun, then the result rank 0 stored) on the toy
    model given as a directory: grad_ascent's two-process run is its one-process run."""
    model_dir = prepare_model(toy["cfg"], toy["items"], no_progress).path
    db = str(tmp_path / "c.duckdb")
    argv = ["run", "--model", str(model_dir), "--dataset", toy["cfg"].dataset, "--method", "grad_ascent"]
    argv += ["--set", "max_steps=2", "--forget", "anxiety", "--device", "cpu", "--db", db, "--json", "--quiet"]
    results = []
    for n in ("1", "2"):
        assert main([*argv, "--processes", n]) == 0
        results.append(json.loads(capsys.readouterr().out))
    one, two = results
    keys = ["forget_acc_after", "retain_acc_after", "mia_auc", "changed_weights", "steps"]
    assert {k: one[k] for k in keys} == {k: two[k] for k in keys} and one["steps"] == 2
    assert Store(db).get_run(two["run_id"])["summary"]["info"]["processes"] == 2
    assert main([*argv, "--processes", "two"]) == 1
    assert "error: --processes takes a number or auto, not 'two'" in capsys.readouterr().err
