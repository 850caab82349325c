"""A sweep's small, committable record: ``results/sweeps/<name>.json``, rewritten after every finished trial.

The Optuna storage (SQLite under runs/, or PostgreSQL) is where workers coordinate; it is not committed. The record
is: what the study is (its file, space, sampler, pruner, seeds per trial, objective, question and hypothesis) and
every trial (state, parameters with their distributions, the objective, the per-epoch values the pruner saw, and
each seed's scalar metrics). ``to_study`` turns it back into an in-memory Optuna study, so the report draws Optuna's
own optimisation history and parameter importances from a fresh clone, without the database.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import distribution_to_json, json_to_distribution
from optuna.trial import TrialState

RECORD_VERSION = 1
_KEPT_ATTRS = ("runs", "grid_cell", "error")  # per-seed metrics and what a trial was; run_dirs are machine paths


def _trial(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = {k: v for k, v in t.user_attrs.items()
             if k in _KEPT_ATTRS or (isinstance(v, (int, float)) and not isinstance(v, bool))}
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "distributions": {k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()},
            "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "user_attrs": attrs,
            "duration_s": t.duration.total_seconds() if t.duration else None}


def study_about(study) -> dict[str, Any]:
    """What a study is (``study``: a sweeps.search.Study), as the record stores it: everything but its trials."""
    return {"version": RECORD_VERSION, "name": study.name, "file": study.path, "question": study.question,
            "hypothesis": study.hypothesis, "verdict": study.verdict, "direction": study.direction,
            "objective": study.objective, **study.fingerprint(), "pruner": study.pruner,
            "prune_from_epoch": study.prune_from_epoch, "seed": study.seed,
            "startup_trials": study.startup_trials if study.sampler == "tpe" else None, "budget": study.budget}


def study_record(s: optuna.Study, study) -> dict[str, Any]:
    """``study``: the sweeps.search.Study it ran from. Trials that trained nothing (a lost grid race) are left out."""
    trials = [t for t in s.get_trials(deepcopy=False) if not t.user_attrs.get("skipped")]
    return {**study_about(study), "trials": [_trial(t) for t in trials]}


def record_path(study) -> Path:
    """Where ``study`` (a sweeps.search.Study) keeps its committed record."""
    return Path(study.export_dir) / f"{study.name}.json"


def write_record(s: optuna.Study, study) -> Path:
    from pointseg.io import write_json

    path = record_path(study)
    write_json(path, study_record(s, study))
    return path


def load_record(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a readable sweep record ({type(e).__name__}: {e})") from None
    if rec.get("version") != RECORD_VERSION or "trials" not in rec:
        raise ValueError(f"{p}: not a sweep record of version {RECORD_VERSION} (written by sweeps.run)")
    return rec


def to_study(rec: dict[str, Any]) -> optuna.Study:
    """The record as an in-memory Optuna study with the same trials (for Optuna's plots and importances)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" in a report build
    try:
        s = optuna.create_study(study_name=rec["name"], direction=rec["direction"])
    finally:
        optuna.logging.set_verbosity(verbosity)
    # a trial still running when the record was written is not a result yet
    s.add_trials([frozen_trial(t) for t in rec["trials"] if TrialState[t["state"]] in FINISHED])
    return s


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def frozen_trial(t: dict[str, Any], state: TrialState | None = None) -> optuna.trial.FrozenTrial:
    """One recorded trial as an Optuna trial to add to a study (``state``: another state than recorded)."""
    state = state or TrialState[t["state"]]
    return optuna.trial.create_trial(
        state=state, value=t["value"] if state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
        params=t["params"],
        distributions={k: json_to_distribution(json.dumps(d)) for k, d in t["distributions"].items()},
        user_attrs=t["user_attrs"], intermediate_values={int(k): v for k, v in t["intermediate_values"].items()})
