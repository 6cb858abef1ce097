"""``bench --set``: a setting goes to every benched method that has it (a budget point for hdsu
and the masked baselines at once), ``METHOD:KEY`` to one method; typos and unknown methods are
refused before any work; the rows record the settings they ran with."""

from __future__ import annotations

import pytest
from test_methods import TINY, toy  # noqa: F401  (module-scoped toy data set and recipe)

from hdsu_core import bench
from hdsu_core.bench import method_settings
from hdsu_core.cli import main
from hdsu_core.engine import RunConfig
from hdsu_core.store import Store

BENCHED = ["hdsu", "grad_diff", "grad_diff_masked", "npo", "npo_masked"]


def test_a_key_goes_to_every_method_that_has_it():
    got = method_settings(BENCHED, {"mask_fraction": 0.01, "npo:beta": 0.3})
    assert got == {
        "hdsu": {"mask_fraction": 0.01},
        "grad_diff_masked": {"mask_fraction": 0.01},
        "npo_masked": {"mask_fraction": 0.01},
        "npo": {"beta": 0.3},
    }
    assert method_settings(BENCHED, {}) == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mask_fractoin": 0.01}, "no benched method has the setting 'mask_fractoin'"),
        ({"simnpo:beta": 2.0}, "'simnpo' is not among the benched methods"),
        ({"grad_diff:beta": 0.3}, "unknown setting"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        method_settings(BENCHED, overrides)


def test_cli_refuses_a_typo_before_any_work(tmp_path, capsys):
    db = tmp_path / "b.duckdb"
    rc = main(["bench", "--methods", "hdsu,grad_diff", "--set", "step_nrom=1", "--db", str(db), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "step_nrom" in err[0]
    assert not db.exists() or Store(db).bench_results().empty


def test_rows_record_the_settings_they_ran_with(toy, tmp_path, monkeypatch):  # noqa: F811
    def toy_config(**kw):  # the toy set's tiny recipe and a 5-step budget
        return RunConfig(
            **{**kw, "recipe": TINY, "n_generations": 2, "settings": {**kw.get("settings", {}), "max_steps": 5}}
        )

    monkeypatch.setattr(bench, "RunConfig", toy_config)
    db = tmp_path / "b.duckdb"
    argv = ["bench", "--dataset", toy["cfg"].dataset, "--forget", "anxiety", "--methods", "grad_diff,grad_diff_masked"]
    assert main([*argv, "--set", "mask_fraction=0.002", "--no-retrain", "--db", str(db), "--quiet"]) == 0
    rows = {r["method"]: r["metrics"] for r in Store(db).bench_results().to_dict("records")}
    assert rows["grad_diff_masked"]["settings"]["mask_fraction"] == 0.002
    assert "mask_fraction" not in rows["grad_diff"]["settings"]
    assert 0 < rows["grad_diff_masked"]["changed_fraction"] <= 0.002
