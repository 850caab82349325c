"""A study file's cells × seeds as units of one Optuna study: queued once, claimed once, a student after its
teacher, nothing after the deadline, and killed workers recovered (the chaos test, on PostgreSQL)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pointseg.config import ConfigError
from sweeps.studyfile import StudyFile
from sweeps.units import UNIT, Worker, copy_reused, left, open_units, units
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def _study_file(tmp_path, cells=None, name="toy", seeds=(0, 1), **extra) -> str:
    raw = {"name": name, "question": "q?", "hypothesis": "h.", "base": str(ROOT / "experiments/points.yaml"),
           "seeds": list(seeds), "cells": cells or [
               {"id": "a", "overrides": ["points.n_per_class=1"]},
               {"id": "b", "overrides": ["points.n_per_class=2"]},
               {"id": "c", "overrides": ["points.n_per_class=3"], "reuse": "other/c"},
               {"id": "d", "overrides": ["points.n_per_class=4"], "machine": "cuda"}], **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_units_are_seed_major_and_skip_exports_reused_seeds_and_other_machines(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = StudyFile.load(_study_file(tmp_path))
    results = tmp_path / "results"
    (results / "toy" / "a").mkdir(parents=True)
    (results / "toy" / "a" / "seed0.json").write_text("{}")
    (results / "other" / "c").mkdir(parents=True)
    (results / "other" / "c" / "seed0.json").write_text("{}")  # c reuses seed 0; other has no seed 1
    assert [u.name for u in units(study, export_dir=str(results))] == ["b@0", "a@1", "b@1", "c@1"]
    assert [u.name for u in units(study, ["b"], [1], str(results))] == ["b@1"]
    with pytest.raises(ConfigError, match="no cells"):
        units(study, ["z"])
    with pytest.raises(ConfigError, match=r"seeds \[7\] are not among the study's seeds \[0, 1\]"):
        units(study, ["a"], [7])


def test_reused_seeds_are_copied_and_another_config_refused(tmp_path):
    study = StudyFile.load(_study_file(tmp_path))
    results = tmp_path / "results"
    cfg = study.config(study.chosen(["c"])[0], 0, export_dir=str(results))
    (results / "other" / "c").mkdir(parents=True)
    (results / "other" / "c" / "seed0.json").write_text(json.dumps({"config": cfg.to_dict(), "final": {}}))
    assert copy_reused(study, str(results)) == ["toy/c seed 0"]  # seed 1: other/c has none, a worker trains it
    assert json.loads((results / "toy" / "c" / "seed0.json").read_text())["reused_from"].endswith("seed0.json")
    assert copy_reused(study, str(results)) == []
    (results / "toy" / "c" / "seed0.json").unlink()
    other = study.config(study.chosen(["b"])[0], 0, export_dir=str(results))  # 2 clicks, not 3
    (results / "other" / "c" / "seed0.json").write_text(json.dumps({"config": other.to_dict(), "final": {}}))
    with pytest.raises(ConfigError, match=r"cell c reuses other/c, but seed 0 there ran another config"):
        copy_reused(study, str(results))


def _fake_runs(monkeypatch, seconds: dict[str, float], fails=(), stamps: dict | None = None):
    """run_study replaced by a sleep that exports {"final": {"test/miou": 0.5}}, or raises for ``fails``."""
    import sweeps.cells

    def run_study(study, seeds, cells, out_dir, export_dir, machine_settings):
        (cell,), (seed,) = cells, seeds
        t0 = time.time()
        time.sleep(seconds[cell])
        if cell in fails:
            raise RuntimeError(f"{cell} broke")
        path = Path(export_dir) / study.name / cell / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"final": {"test/miou": 0.5}}))
        if stamps is not None:
            stamps[cell] = (t0, time.time())
    monkeypatch.setattr(sweeps.cells, "run_study", run_study)


def _workers(path: str | list[str], tmp_path, n: int = 2, deadline_s: float = 60, expect_s: float = 1,
             out_dir: str = "runs/studies") -> dict:
    """``n`` workers in threads of this process, each with its own storage connection, until done."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    results = str(tmp_path / "results")
    specs = [path] if isinstance(path, str) else path
    studies = open_units(specs, url, results, out_dir=out_dir)
    errors = []

    def work():
        try:
            Worker(open_units(specs, url, results, out_dir=out_dir), export_dir=results,
                   deadline=time.time() + deadline_s, expect_s=expect_s, poll_s=0.05).work()
        except Exception as e:  # noqa: BLE001 - shown by the assertion below
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors or all(isinstance(e, ConfigError) for e in errors), errors
    return left(studies)


def _teacher_study(tmp_path) -> str:
    """Study ``st``: a teacher, another cell, and the teacher's self-trained student, seed 0."""
    teacher = f"selftrain.teacher={tmp_path}/runs/studies/st/teacher/seed{{seed}}"
    cells = [{"id": "teacher", "overrides": []}, {"id": "other", "overrides": []},
             {"id": "student", "overrides": [teacher]}]
    return _study_file(tmp_path, cells, name="st", seeds=[0])


def test_four_workers_on_sqlite_never_claim_one_waiting_trial_twice(tmp_path):
    """SQLite ignores SELECT FOR UPDATE: without the claim lock, 4 threads popping 60 queued trials claimed 15-24 of
    them twice (two workers trained one unit; the second tell failed with "Cannot tell a COMPLETE trial")."""
    from collections import Counter

    from sweeps.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    s = optuna.create_study(study_name="claims", storage=open_storage(url))
    for i in range(60):
        s.enqueue_trial({}, user_attrs={"i": i}, skip_if_exists=False)
    claimed: Counter = Counter()

    def claim():
        mine = optuna.load_study(study_name="claims", storage=open_storage(url))
        while (trial_id := mine._pop_waiting_trial_id()) is not None:  # what Study.ask does first
            claimed[trial_id] += 1
    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(claimed) == 60 and max(claimed.values()) == 1, {k: v for k, v in claimed.items() if v > 1}


def _one_unit_study(tmp_path):
    """Study ``one`` (cell a, seed 0) in a SQLite storage with Optuna's heartbeats on, and its empty export dir."""
    from sweeps.storage import experimental_ok, open_storage
    from sweeps.units import RetryUnitOnce

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with experimental_ok():
        retry = RetryUnitOnce(max_retry=5, url=url)
    s = optuna.create_study(study_name="one", storage=open_storage(url, 1, 2, retry=retry))
    study = StudyFile.load(_study_file(tmp_path, [{"id": "a", "overrides": []}], name="one", seeds=[0]))
    return url, s, study, retry, str(tmp_path / "results")


def _units_of(s) -> list[tuple[str, str]]:
    return [(t.user_attrs[UNIT], t.state.name) for t in s.get_trials()]


def test_a_unit_that_ends_while_a_worker_starts_is_not_queued_again(tmp_path):
    """CI's chaos run completed two units twice: a restarted worker listed them (not exported yet), they ended, and
    it queued them again, since a COMPLETE trial holds nothing. The exports are read after the trials now."""
    from sweeps.units import Unit, queue_units

    url, s, study, _, results = _one_unit_study(tmp_path)
    todo = units(study, export_dir=results)  # listed before the unit ends
    assert [u.name for u in todo] == ["a@0"]
    trial = s.ask()
    trial.set_user_attr(UNIT, "a@0")
    (Path(results) / "one" / "a").mkdir(parents=True)
    (Path(results) / "one" / "a" / "seed0.json").write_text("{}")  # the export is written before the trial ends
    s.tell(trial, 0.5)
    assert queue_units(s, study, todo, url, results) == 0
    assert queue_units(s, study, [Unit("a", 1)], url, results) == 1  # a unit not exported is queued


@pytest.mark.parametrize("first", ["worker", "retry"])
def test_a_dead_workers_unit_is_queued_once_whoever_queues_it_first(tmp_path, first):
    """Optuna fails a stale trial, then calls the retry; a worker starting in between queues the unit itself."""
    from sweeps.units import queue_units

    url, s, study, retry, results = _one_unit_study(tmp_path)
    trial = s.ask()
    trial.set_user_attr(UNIT, "a@0")
    s.tell(trial, state=TrialState.FAIL)  # what fail_stale_trials does before its callback runs
    dead = s.trials[-1]
    if first == "worker":
        assert queue_units(s, study, units(study, export_dir=results), url, results) == 1
        retry(s, dead)
    else:
        retry(s, dead)
        assert queue_units(s, study, units(study, export_dir=results), url, results) == 0
    assert _units_of(s) == [("a@0", "FAIL"), ("a@0", "WAITING")]


def test_a_unit_exported_by_a_completed_trial_is_not_completed_again(tmp_path, monkeypatch):
    """However a finished unit comes to be queued again, its second trial is a skip, not a second COMPLETE."""
    url, s, study, _, results = _one_unit_study(tmp_path)
    _fake_runs(monkeypatch, {"a": 0.0})
    worker = Worker([(study, s)], export_dir=results, poll_s=0.01)
    for _ in range(2):
        s.enqueue_trial({}, user_attrs={UNIT: "a@0", "after": ""}, skip_if_exists=False)
        worker.step()
    trials = s.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].user_attrs["skipped"] == "exported by an earlier trial"


def test_a_student_waits_for_its_teacher_and_is_not_started_when_it_failed(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = _teacher_study(tmp_path)
    study = StudyFile.load(path)
    assert [(u.name, u.after) for u in units(study, export_dir=str(tmp_path / "results"))] == \
        [("teacher@0", ""), ("other@0", ""), ("student@0", "teacher@0")]
    stamps: dict = {}
    _fake_runs(monkeypatch, {"teacher": 2.0, "other": 0.1, "student": 0.1}, stamps=stamps)
    rep = _workers(path, tmp_path / "ok")
    assert rep == {"failed": [], "not started": []}
    assert stamps["student"][0] >= stamps["teacher"][1]  # a worker was free after `other`, yet the student waited
    s = optuna.load_study(study_name="st", storage=f"sqlite:///{tmp_path / 'ok' / 'optuna.db'}")
    done = [t.user_attrs[UNIT] for t in s.get_trials() if t.state == TrialState.COMPLETE]
    assert sorted(done) == ["other@0", "student@0", "teacher@0"]  # each unit once
    # the teacher exported in an earlier session: its student is queued only if its weights are still here
    results = tmp_path / "ok" / "results"
    (results / "st" / "student" / "seed0.json").unlink()
    assert [u.name for u in units(study, export_dir=str(results))] == []
    (tmp_path / "runs" / "studies" / "st" / "teacher" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "studies" / "st" / "teacher" / "seed0" / "best.pt").write_bytes(b"x")
    assert [u.name for u in units(study, export_dir=str(results))] == ["student@0"]

    _fake_runs(monkeypatch, {"teacher": 0.1, "other": 0.1, "student": 0.1}, fails={"teacher"})
    rep = _workers(path, tmp_path / "broken")
    assert rep == {"failed": ["st/teacher@0"], "not started": ["st/student@0"]}


def test_a_student_waits_for_a_teacher_that_is_another_studys_run(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    teachers = _teacher_study(tmp_path)  # study st: teacher, other, student
    out = f"{tmp_path}/runs/studies"
    dev = _study_file(tmp_path, [{"id": "variant", "overrides": [f"selftrain.teacher={out}/st/teacher/seed{{seed}}"]}],
                      name="dev", seeds=[0])
    assert [(u.name, u.after) for u in units(StudyFile.load(dev), out_dir=out)] == [("variant@0", "st/teacher@0")]
    # a teacher outside the studies' folder is no unit's: nothing to wait for
    assert units(StudyFile.load(dev), out_dir=str(tmp_path / "elsewhere"))[0].after == ""
    stamps: dict = {}
    _fake_runs(monkeypatch, {"teacher": 1.5, "other": 0.1, "student": 0.1, "variant": 0.1}, stamps=stamps)
    rep = _workers([dev, teachers], tmp_path, out_dir=out)  # dev first: its worker is free long before the teacher
    assert rep == {"failed": [], "not started": []}
    assert stamps["variant"][0] >= stamps["teacher"][1]


def test_nothing_starts_that_would_end_after_the_deadline(tmp_path, monkeypatch):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = _teacher_study(tmp_path)
    _fake_runs(monkeypatch, {"teacher": 0.1, "other": 6.0, "student": 0.1})
    # room for one run (expected 10 s of 15, then 6 s measured) but not for a teacher and its student
    rep = _workers(path, tmp_path, n=1, deadline_s=15, expect_s=10)
    assert rep == {"failed": [], "not started": ["st/student@0", "st/teacher@0"]}
    # one file named twice (two selections) is one Optuna study with the units of both
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    studies = open_units([path + ":teacher", path + ":student"], url, str(tmp_path / "elsewhere"))
    assert len(studies) == 1
    assert sorted(t.user_attrs[UNIT] for t in studies[0][1].get_trials()) == ["student@0", "teacher@0"]
    assert (tmp_path / "results" / "st" / "other" / "seed0.json").exists()


def _tiny_study(tmp_path, fake_dataset, name: str) -> str:
    ov = [o for o in tiny_overrides(fake_dataset, tmp_path / "unused") if not o.startswith(("out_dir", "export_dir"))]
    cells = [{"id": f"n{k}", "overrides": [f"points.n_per_class={k}"]} for k in (1, 2, 3)]
    return _study_file(tmp_path, cells, name=name, seeds=[0, 1], overrides=ov)


def _sweep(path: str, tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeps", path, "--out-dir", str(tmp_path / "runs"),
                             "--export-dir", str(tmp_path / "results"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _table(tmp_path, name: str) -> dict[str, float]:
    out = {}
    for p in sorted((tmp_path / "results" / name).glob("*/seed*.json")):
        out[f"{p.parent.name}/{p.stem}"] = json.loads(p.read_text())["final"]["test/miou"]
    return out


def _done_once(storage: str, name: str) -> list[str]:
    s = optuna.load_study(study_name=name, storage=storage)
    return sorted(t.user_attrs[UNIT] for t in s.get_trials() if t.state == TrialState.COMPLETE
                  and not t.user_attrs.get("skipped"))


def test_a_study_file_runs_on_two_workers_end_to_end(tmp_path, fake_dataset):
    path = _tiny_study(tmp_path, fake_dataset, "tiny")
    p = _sweep(path, tmp_path, "--workers", "2")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    assert "failed: 0" in out and "not started: 0" in out
    table = _table(tmp_path, "tiny")
    assert sorted(table) == [f"n{k}/seed{s}" for k in (1, 2, 3) for s in (0, 1)]
    assert _done_once(f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}", "tiny") == \
        sorted(f"n{k}@{s}" for k in (1, 2, 3) for s in (0, 1))
    p = _sweep(path, tmp_path)  # again: everything is exported, nothing is queued or trained
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0 and "0 units queued" in out, out[-2000:]


def test_chaos_three_workers_on_postgres_with_random_sigkills(tmp_path, fake_dataset, postgres):
    """Six units, three worker processes sharing one PostgreSQL study; a watchdog SIGKILLs a random worker three
    times and starts it again. Every unit finishes exactly once and the table equals an undisturbed run's."""
    calm_dir, chaos_dir = tmp_path / "calm", tmp_path / "chaos"
    calm_dir.mkdir()
    chaos_dir.mkdir()
    calm = _tiny_study(calm_dir, fake_dataset, "units")
    chaos = _tiny_study(chaos_dir, fake_dataset, "units")
    p = _sweep(calm, calm_dir)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    args = ("--storage", postgres, "--heartbeat", "1", "--grace-period", "5")
    rng = random.Random(0)
    storage = optuna.storages.RDBStorage(postgres)
    workers = [_sweep(chaos, chaos_dir, *args) for _ in range(3)]
    kills, deadline, started = 0, time.time() + 600, 3
    while kills < 3 and time.time() < deadline and any(w.poll() is None for w in workers):
        time.sleep(rng.uniform(0.5, 2))
        try:  # a worker in the middle of a unit (its trial names its process)
            held = [t.user_attrs.get("worker", "") for t in optuna.load_study(study_name="units", storage=storage)
                    .get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        except KeyError:  # the study is not created yet
            continue
        busy = [i for i, w in enumerate(workers) if w.poll() is None and any(h.endswith(f":{w.pid}") for h in held)]
        if not busy:
            continue
        i = rng.choice(busy)
        os.killpg(workers[i].pid, signal.SIGKILL)
        workers[i].wait()
        kills += 1
        workers[i] = _sweep(chaos, chaos_dir, *args)
        started += 1
    outs = [w.communicate(timeout=max(1, deadline - time.time()))[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n---\n".join(o[-2000:] for o in outs)
    assert kills == 3
    assert _done_once(postgres, "units") == sorted(f"n{k}@{s}" for k in (1, 2, 3) for s in (0, 1))
    assert _table(chaos_dir, "units") == pytest.approx(_table(calm_dir, "units"))
    trials = optuna.load_study(study_name="units", storage=postgres).get_trials()
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    assert len(retried) >= 3  # each killed unit was failed by its stale heartbeat and queued again
    print(f"chaos: {kills} SIGKILLs of workers mid-unit, {started} worker starts, {len(trials)} trials for 6 units "
          f"({len(retried)} retries)")


def test_the_dashboard_serves_the_units_of_a_study(tmp_path, monkeypatch):
    import socket
    import urllib.request

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _fake_runs(monkeypatch, {"a": 0.0, "b": 0.0})
    path = _study_file(tmp_path, [{"id": "a", "overrides": []}, {"id": "b", "overrides": []}], seeds=[0])
    _workers(path, tmp_path, n=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "sweeps.dashboard", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
                          "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, studies = time.time() + 60, None
        while studies is None and time.time() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, p.communicate(timeout=5)[0] if p.poll() is not None else "no answer"
        (toy,) = [st for st in studies if st["study_name"] == "toy"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{toy['study_id']}?after=0",
                                    timeout=10) as r:
            trials = json.loads(r.read())["trials"]
        units_seen = sorted(a["value"] for t in trials for a in t["user_attrs"] if a["key"] == UNIT)
        assert units_seen == ["a@0", "b@0"]
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_the_dashboard_names_a_missing_storage(tmp_path):
    from sweeps.dashboard import main

    assert main(["--storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
