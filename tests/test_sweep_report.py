"""A sweep's committed record → the report's section, without the database and without training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from analysis.sweep_report import early_rank_agreement, sweep_sections
from pointseg.io import write_json
from sweeps.record import load_record, study_record, to_study, write_record
from sweeps.search import Study
from tests.conftest import ROOT, search_file

matplotlib.use("Agg")
_PNG = {"metadata": {"Software": None}, "dpi": 60}


def _sweep_file(tmp_path: Path, **extra) -> Path:
    body = {"name": "joint", "base_config": str(ROOT / "experiments/points.yaml"), "sampler": "tpe", "trials": 10,
            "pruner": "median", "seeds_per_config": 2, "export_dir": str(tmp_path / "results" / "sweeps"),
            "out_dir": str(tmp_path / "runs"), "question": "Which parameter matters?",
            "hypothesis": "Clicks matter most.", "overrides": ["eval.val_points_per_class=20"],
            "space": {"points.n_per_class": {"type": "int", "low": 1, "high": 30, "log": True},
                      "loss.gamma": {"type": "float", "low": 0.0, "high": 3.0}}, **extra}
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    path = tmp_path / "sweeps" / "joint.yaml"
    path.write_text(yaml.safe_dump(search_file(body), allow_unicode=True))
    return path


def _run_fake(study: Study) -> optuna.Study:
    """TPE over a known function, with the trainer's reporting (per epoch) and user attributes, no training."""
    s = optuna.create_study(direction="maximize", sampler=study.make_sampler(), pruner=study.make_pruner())

    def objective(t):
        p = study.suggest(t)
        v = 0.4 + 0.05 * p["points.n_per_class"] ** 0.5 - 0.001 * p["loss.gamma"]
        for epoch in range(3):
            t.report(v - 0.1 / (epoch + 1), epoch)
            if t.should_prune():
                raise optuna.TrialPruned()
        t.set_user_attr("runs", [{"test/miou": v + 0.1 + 0.01 * k} for k in range(2)])
        t.set_user_attr("run_dirs", ["/somewhere/on/a/machine"])
        return v

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s.optimize(objective, n_trials=10)
    return s


def test_a_sweep_record_becomes_a_report_section_with_its_trials_importances_and_figures(tmp_path):
    path = _sweep_file(tmp_path, verdict="Confirmed: clicks lead.")
    study = Study.load(path)
    s = _run_fake(study)
    rec_path = write_record(s, study)
    rec = load_record(rec_path)
    assert rec["question"] == "Which parameter matters?" and len(rec["trials"]) == 10
    assert "/somewhere" not in rec_path.read_text()
    rebuilt = to_study(rec)
    assert [t.params for t in rebuilt.trials] == [t.params for t in s.trials]
    assert [t.state for t in rebuilt.trials] == [t.state for t in s.trials]

    out = tmp_path / "report"
    out.mkdir()
    md = "\n".join(sweep_sections(out, tmp_path / "results", tmp_path / "sweeps", png=_PNG))
    best = max((t for t in s.trials if t.value is not None), key=lambda t: t.value)
    assert "## Sweep: joint" in md and "Clicks matter most." in md and "Confirmed: clicks lead." in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| trial")]
    assert rows[0].startswith(f"| {best.number} |") and f"| {best.params['points.n_per_class']} |" in rows[0]
    assert "fANOVA" in md and "clicks per class" in md
    done = [t for t in rebuilt.trials if t.state == TrialState.COMPLETE]
    epoch, n, rho = early_rank_agreement(rebuilt)  # the fake's epoch 0 is its value - 0.1: the same order
    assert (epoch, n, rho) == (0, len(done), pytest.approx(1.0))
    assert f"over the {n} complete trials" in md and "Spearman's ρ = +1.00" in md
    pruned = [t for t in s.trials if t.state == TrialState.PRUNED]
    assert pruned, "the fake sweep should prune a trial, or this test checks nothing about pruned trials"
    line = next(x for x in md.splitlines() if x.startswith("Pruned"))
    for t in pruned:  # "…; <trial> (<param> <value>, …; epoch <e>, <value>)"
        item = re.search(rf"(?:: |; ){t.number} \(([^)]*)\)", line).group(1)
        epoch = max(t.intermediate_values)
        assert f"clicks per class {t.params['points.n_per_class']}" in item
        assert item.endswith(f"; epoch {epoch}, {t.intermediate_values[epoch]:.3f}")
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert set(first) == {"sweep-joint-history.png", "sweep-joint-importances.png"}
    sweep_sections(out, tmp_path / "results", tmp_path / "sweeps", png=_PNG)  # drawn again: the same bytes
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == first


def test_a_sweep_with_a_hypothesis_and_no_record_says_how_to_run_it(tmp_path):
    path = _sweep_file(tmp_path)
    out = tmp_path / "report"
    out.mkdir()
    md = "\n".join(sweep_sections(out, tmp_path / "results", tmp_path / "sweeps", png=_PNG))
    assert "Clicks matter most." in md and f"make sweep STUDY={path}" in md and "Not run yet" in md
    assert not list(out.glob("*.png"))


def test_a_broken_record_names_its_file(tmp_path):
    bad = tmp_path / "results" / "sweeps" / "joint.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="joint.json"):
        load_record(bad)
    bad.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="joint.json.*version"):
        load_record(bad)


def test_a_record_with_few_complete_trials_ranks_no_parameters(tmp_path):
    study = Study.load(_sweep_file(tmp_path))
    s = _run_fake(study)
    keep = [t.number for t in s.trials if t.state == TrialState.COMPLETE][:2]
    rec = study_record(s, study)
    rec["trials"] = [t for t in rec["trials"] if t["number"] in keep]
    (tmp_path / "results" / "sweeps").mkdir(parents=True, exist_ok=True)
    write_json(tmp_path / "results" / "sweeps" / "joint.json", rec)
    out = tmp_path / "report"
    out.mkdir()
    md = "\n".join(sweep_sections(out, tmp_path / "results", tmp_path / "sweeps", png=_PNG))
    assert "2 complete" in md and "not computed before 5 trials are complete" in md and "fANOVA" not in md
    assert {p.name for p in out.glob("*.png")} == {"sweep-joint-history.png"}


def test_trials_stopped_with_their_worker_and_retried_are_not_counted_as_failures(tmp_path):
    study = Study.load(_sweep_file(tmp_path))
    s = _run_fake(study)
    rec = study_record(s, study)
    done = [t for t in rec["trials"] if t["state"] == "COMPLETE"]
    stopped, broken = rec["trials"][0], rec["trials"][1]
    stopped.update(state="FAIL", value=None, params=dict(done[-1]["params"]))  # its parameters came back later
    broken.update(state="FAIL", value=None)  # a real failure while its parameters never come back
    rec["trials"].append({**rec["trials"][-1], "number": 99, "state": "WAITING", "value": None,
                          "params": dict(broken["params"])})  # … until a waiting retry of them is recorded
    (tmp_path / "results" / "sweeps").mkdir(parents=True, exist_ok=True)
    write_json(tmp_path / "results" / "sweeps" / "joint.json", rec)
    out = tmp_path / "report"
    out.mkdir()
    md = "\n".join(sweep_sections(out, tmp_path / "results", tmp_path / "sweeps", png=_PNG))
    assert "0 failed** of a budget of 10; 2 more stopped with their worker and were retried" in md
    write_json(tmp_path / "results" / "sweeps" / "joint.json", {**rec, "trials": rec["trials"][:-1]})
    md = "\n".join(sweep_sections(out, tmp_path / "results", tmp_path / "sweeps", png=_PNG))
    assert "1 failed** of a budget of 10; 1 more stopped with their worker and were retried" in md
