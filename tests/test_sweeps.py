"""The sweep harness drives the shared trainer: a real tiny study, a SIGKILLed worker, two PostgreSQL workers."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweeps.record import load_record, to_study
from sweeps.run import _experimental_ok, cell_key, make_storage, open_study, worker
from sweeps.search import Study, SweepError
from sweeps.studyfile import search_files
from tests.conftest import search_file, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def _study_file(tmp_path, fake_dataset, name="tiny", space=None, **extra) -> Path:
    ov = [o for o in tiny_overrides(fake_dataset, tmp_path / "unused") if not o.startswith("out_dir")] + \
        ["eval.val_points_per_class=2"]  # the spaces vary the budget: one set of val clicks for every trial
    body = {"name": name, "base_config": str(ROOT / "experiments/points.yaml"), "overrides": ov,
            "sampler": "grid", "space": space or {"points.n_per_class": {"choices": [1, 3]}},
            "out_dir": str(tmp_path / "sweeps"), "export_dir": str(tmp_path / "results" / "sweeps"), **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(search_file(body)))
    return path


def _trials(study: Study):
    return optuna.load_study(study_name=study.name, storage=make_storage(study)).get_trials(deepcopy=False)


def _assert_each_cell_once(study: Study) -> None:
    trials = [t for t in _trials(study) if not t.user_attrs.get("skipped")]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    cells = sorted(cell_key(p) for p in study.grid())
    assert sorted(t.user_attrs["grid_cell"] for t in done) == cells  # every cell, each exactly once


def test_tiny_study_end_to_end(tmp_path, fake_dataset):
    study = Study.load(_study_file(tmp_path, fake_dataset))
    worker(study, progress=False)
    _assert_each_cell_once(study)
    for t in _trials(study):
        assert t.params["points.n_per_class"] in (1, 3)
        assert 0 <= t.user_attrs["test/miou"] <= 1 and t.value == pytest.approx(t.user_attrs["val_points/miou"])
        (run_dir,) = t.user_attrs["run_dirs"]
        final = json.loads((Path(run_dir) / "final.json").read_text())
        assert final["test/miou"] == t.user_attrs["runs"][0]["test/miou"]
        assert yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["points"]["n_per_class"] == \
            t.params["points.n_per_class"]
    assert (tmp_path / "sweeps" / "tiny.csv").exists()
    # running it again trains nothing more
    worker(study, progress=False)
    assert len(_trials(study)) == 2


def test_tpe_study_with_pruning(tmp_path, fake_dataset):
    path = _study_file(tmp_path, fake_dataset, name="tpe", sampler="tpe", trials=3, pruner="median", startup_trials=2,
                       space={"loss.gamma": {"type": "float", "low": 0.0, "high": 3.0},
                              "points.n_per_class": {"type": "int", "low": 1, "high": 5}})
    study = Study.load(path)
    assert study.make_sampler()._n_startup_trials == 2  # the study's random start, not Optuna's default of 10
    worker(study, progress=False)
    trials = _trials(study)
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert all(0 <= t.params["loss.gamma"] <= 3 for t in trials)
    # the committed record holds every trial as the storage does, and rebuilds it without the database
    rec = load_record(tmp_path / "results" / "sweeps" / "tpe.json")
    assert rec["file"] == str(path) and rec["space"] == study.space and rec["seeds_per_config"] == 1
    assert rec["startup_trials"] == 2
    rebuilt = {t.number: t for t in to_study(rec).trials}
    assert len(rebuilt) == 3
    for t, r in zip(trials, rec["trials"]):
        assert r["number"] == t.number and r["state"] == t.state.name and r["params"] == t.params
        assert "run_dirs" not in r["user_attrs"]  # machine paths stay out of a committed file
        assert dict(rebuilt[r["number"]].intermediate_values) == dict(t.intermediate_values)
        assert rebuilt[r["number"]].value == t.value  # a pruned trial's too: its last value before pruning
        if t.state == TrialState.COMPLETE:
            assert r["user_attrs"]["runs"][0]["test/miou"] >= 0


def test_a_trial_resumes_from_the_exports_alone(tmp_path, fake_dataset, monkeypatch):
    path = _study_file(tmp_path, fake_dataset, name="carry", sampler="tpe", trials=2, pruner="median",
                       space={"loss.gamma": {"type": "float", "low": 0.0, "high": 3.0}})
    worker(Study.load(path), progress=False)

    def seen():
        return sorted((t.params["loss.gamma"], t.value, dict(t.intermediate_values)) for t in _trials(Study.load(path)))

    before = seen()
    # another machine: the exports came along, the study database, the run directories and the record did not
    shutil.rmtree(tmp_path / "sweeps")
    (tmp_path / "results" / "sweeps" / "carry.json").unlink()
    import pointseg.train

    def no_training(*a, **k):
        raise AssertionError("an exported seed was trained again")

    monkeypatch.setattr(pointseg.train, "fit", no_training)
    worker(Study.load(path), progress=False)
    assert seen() == before  # same draws, values and per-epoch values the pruner saw
    # an export of another config under the trial's name is refused, never taken for this one
    from pointseg.config import load_config
    from sweeps.run import _exported_run

    exp = next((tmp_path / "results" / "carry").glob("*/seed0.json"))
    rec = json.loads(exp.read_text())
    cfg = load_config(None, rec["config"])
    rec["config"]["train"]["lr"] *= 2
    exp.write_text(json.dumps(rec))
    with pytest.raises(SweepError, match="another config.*train.lr"):
        _exported_run(cfg)


def test_a_new_storage_goes_on_from_the_committed_record(tmp_path, fake_dataset, monkeypatch):
    """A new session or a fresh clone has the record and nothing else: the study goes on where it stood."""
    path = _study_file(tmp_path, fake_dataset, name="goon", sampler="tpe", trials=2, pruner="none",
                       space={"loss.gamma": {"type": "float", "low": 0.0, "high": 3.0}})
    worker(Study.load(path), progress=False)
    study = Study.load(path)

    def seen():
        return [(t.number, t.state, t.params, t.value, dict(t.intermediate_values)) for t in _trials(study)]

    before = seen()
    record = tmp_path / "results" / "sweeps" / "goon.json"
    rec = json.loads(record.read_text())
    # the session ended while a third trial trained: the record saw it running
    rec["trials"].append({**rec["trials"][1], "number": 2, "state": "RUNNING", "value": None,
                          "params": {"loss.gamma": 1.5}, "intermediate_values": {"1": 0.2}})
    record.write_text(json.dumps(rec))
    shutil.rmtree(tmp_path / "sweeps")  # no storage, no run directories ...
    shutil.rmtree(tmp_path / "results" / "goon")  # ... and no exports
    import pointseg.train

    monkeypatch.setattr(pointseg.train, "fit", lambda *a, **k: pytest.fail("a restored trial was trained again"))
    open_study(study, make_storage(study))
    after = seen()
    assert after[:2] == before  # numbers, states, draws, values and the values the pruner saw
    assert after[2][:2] == (2, TrialState.FAIL)  # stopped: failed under its number ...
    waiting = _trials(study)[3]  # ... and queued again with its parameters
    assert waiting.state == TrialState.WAITING and waiting.system_attrs["fixed_params"] == {"loss.gamma": 1.5}
    # a record of another study under this name is refused, never overwritten
    rec["space"] = {"loss.gamma": {"type": "float", "low": 0.0, "high": 1.0}}
    record.write_text(json.dumps(rec))
    shutil.rmtree(tmp_path / "sweeps")
    with pytest.raises(SweepError, match="goon.json records a study named 'goon' with another space"):
        open_study(study, make_storage(study))
    assert json.loads(record.read_text()) == rec  # left as it was


def test_a_worker_whose_trials_all_fail_stops_and_names_the_error(tmp_path, fake_dataset, monkeypatch):
    import pointseg.train

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(pointseg.train, "fit", broken)
    study = Study.load(_study_file(tmp_path, fake_dataset, name="broken", sampler="tpe", trials=10,
                                   space={"loss.gamma": {"type": "float", "low": 0.0, "high": 3.0}}))
    with pytest.raises(SweepError, match="3 trials in a row failed.*RuntimeError: boom"):
        worker(study, progress=False)  # before, it sampled and failed trials for ever
    assert [t.state for t in _trials(study)] == [TrialState.FAIL] * 3


def test_parallel_workers_draw_different_parameters_and_one_worker_repeats_its_draws(tmp_path, fake_dataset):
    # each worker builds its own sampler from the same study seed; they must not draw the same trial
    study = Study.load(_study_file(tmp_path, fake_dataset, name="seeded", sampler="tpe", trials=4,
                                   space={"loss.gamma": {"type": "float", "low": 0.0, "high": 3.0}}))
    dist = {"loss.gamma": optuna.distributions.FloatDistribution(0.0, 3.0)}

    def draws(workers: int) -> list[float]:
        storage = optuna.storages.InMemoryStorage()
        first = optuna.create_study(study_name="s", storage=storage, sampler=study.make_sampler())
        others = [optuna.load_study(study_name="s", storage=storage, sampler=study.make_sampler())
                  for _ in range(workers - 1)]
        return [w.ask(dist).params["loss.gamma"] for _ in range(4 // workers) for w in [first, *others]]

    two = draws(2)
    assert len(set(two)) == 4  # trial numbers 0–3 over two workers: four different draws
    assert draws(1) == two  # the draws follow the trial number, not the worker: one worker repeats them


def test_bad_studies_fail_before_training(tmp_path, fake_dataset):
    with pytest.raises(SweepError, match="val_points/miou"):  # the points arm never selects on dense masks
        Study.load(_study_file(tmp_path, fake_dataset, name="dense", objective="val/miou"))
    with pytest.raises(SweepError, match="startup_trials"):
        Study.load(_study_file(tmp_path, fake_dataset, name="s", sampler="tpe", trials=3, startup_trials=0,
                               space={"loss.gamma": {"type": "float", "low": 0.0, "high": 3.0}}))
    with pytest.raises(SweepError, match="space.loss.gama"):
        Study.load(_study_file(tmp_path, fake_dataset, name="a", space={"loss.gama": {"choices": [1]}}))
    p = _study_file(tmp_path, fake_dataset, name="b")
    raw = yaml.safe_load(p.read_text())
    raw["search"]["space"] = {}
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(SweepError, match="empty"):
        Study.load(p)
    with pytest.raises(SweepError, match="cannot open the study storage"):
        make_storage(Study.load(_study_file(tmp_path, fake_dataset, name="c",
                                            storage="postgresql://nobody@127.0.0.1:1/none")))
    s1 = Study.load(_study_file(tmp_path, fake_dataset, name="same"))
    open_study(s1, make_storage(s1))
    s2 = Study.load(_study_file(tmp_path, fake_dataset, name="same", space={"loss.gamma": {"choices": [0.0]}}))
    with pytest.raises(SweepError, match="already exists"):
        open_study(s2, make_storage(s2))


def _run_sweep(path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweeps.run", "--study", str(path), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sigkill_mid_trial_then_resume(tmp_path, fake_dataset):
    path = _study_file(tmp_path, fake_dataset, name="killme", heartbeat_interval=1, grace_period=3,
                       space={"points.n_per_class": {"choices": [1, 2, 3]}},
                       overrides=None)
    raw = yaml.safe_load(path.read_text())
    raw["overrides"] = [o for o in tiny_overrides(fake_dataset, tmp_path) if not o.startswith("out_dir")] + \
        ["train.epochs=4", "eval.val_points_per_class=2"]
    path.write_text(yaml.safe_dump(raw))
    p = _run_sweep(path)
    deadline = time.time() + 300
    while time.time() < deadline and not glob.glob(str(tmp_path / "sweeps/killme/*/seed0/metrics.jsonl")):
        time.sleep(0.2)
    assert p.poll() is None, p.stdout.read()
    os.killpg(p.pid, signal.SIGKILL)  # mid-trial: a run directory exists without final.json
    p.wait()
    study = Study.load(path)
    states = [t.state for t in _trials(study)]
    assert TrialState.RUNNING in states
    p2 = _run_sweep(path)
    out, _ = p2.communicate(timeout=600)
    assert p2.returncode == 0, out
    _assert_each_cell_once(study)
    failed = [t for t in _trials(study) if t.state == TrialState.FAIL]
    assert len(failed) == 1  # the killed one, retried once


def _alive(pid: int) -> bool:
    try:  # a zombie (state Z) has exited; in a container nobody may reap it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def test_stopping_the_sweep_stops_the_workers_it_started(tmp_path, fake_dataset):
    path = _study_file(tmp_path, fake_dataset, name="stopme", space={"points.n_per_class": {"choices": [1, 2]}})
    raw = yaml.safe_load(path.read_text())
    raw["overrides"] += ["train.epochs=500"]  # far longer than the test: a worker left behind would still train
    path.write_text(yaml.safe_dump(raw))
    p = _run_sweep(path, "--workers", "2")
    try:
        deadline = time.time() + 300
        while time.time() < deadline and len(glob.glob(str(tmp_path / "sweeps/stopme/*/seed0/metrics.jsonl"))) < 2:
            time.sleep(0.2)
        assert p.poll() is None, p.stdout.read()
        children = [int(c) for c in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
        workers = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) == 1  # the second worker; the first is the process itself
        os.kill(p.pid, signal.SIGTERM)  # the sweep only, as `kill PID` does, not its process group
        p.communicate(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        left = [w for w in workers if _alive(w)]
    finally:  # whatever happened, nothing of this test trains on (the sweep ran in its own process group)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left  # no orphan goes on training (and writing) without its sweep


def test_two_workers_share_one_postgres_study(tmp_path, fake_dataset, postgres):
    path = _study_file(tmp_path, fake_dataset, name="pg", storage=postgres,
                       space={"points.n_per_class": {"choices": [1, 2]}, "loss.gamma": {"choices": [0.0, 2.0]}})
    procs = [_run_sweep(path) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n---\n".join(o[-1500:] for o in outs)
    study = Study.load(path)
    _assert_each_cell_once(study)
    real = [t for t in _trials(study) if not t.user_attrs.get("skipped")]
    assert len(real) == 4  # no duplicate, no lost cell
    workers = {tuple(t.user_attrs["run_dirs"]) for t in real}
    assert len(workers) == 4


def _open_storage_at(path: str, start: float, q) -> None:
    time.sleep(max(0.0, start - time.time()))  # all processes reach CREATE TABLE together
    try:
        make_storage(Study.load(Path(path)))
        q.put("ok")
    except Exception as e:  # reported to the parent, which shows it
        q.put(f"{type(e).__name__}: {e}")


def test_workers_creating_the_schema_at_once(tmp_path, fake_dataset, postgres):
    # PostgreSQL fails one of two concurrent CREATE TABLEs (DuplicateTable or a pg_type unique violation);
    # an advisory lock in make_storage must serialise them (this race once broke CI)
    import multiprocessing as mp

    path = _study_file(tmp_path, fake_dataset, name="race", storage=postgres)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start = time.time() + 8  # spawn + imports take a few seconds
    procs = [ctx.Process(target=_open_storage_at, args=(str(path), start, q)) for _ in range(6)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * 6, results


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _cell_table(study: Study) -> dict[str, float]:
    """cell → its objective and its test mIoU (flat, for pytest.approx)."""
    done = [t for t in _trials(study) if t.state == TrialState.COMPLETE]
    table = {f"{t.user_attrs['grid_cell']} value": t.value for t in done}
    table.update({f"{t.user_attrs['grid_cell']} test": t.user_attrs["test/miou"] for t in done})
    return table


def test_chaos_random_sigkills_of_workers(tmp_path, fake_dataset):
    """8 short trials, 2 workers on SQLite; a watchdog SIGKILLs a random worker (the driver included) three times
    and the sweep is launched again until it ends. Every cell completes exactly once, every run directory is whole,
    and the table equals an undisturbed run's."""
    import random

    space = {"points.n_per_class": {"choices": [1, 2, 3, 4]}, "loss.gamma": {"choices": [0.0, 2.0]}}
    (tmp_path / "calm").mkdir()
    (tmp_path / "chaos").mkdir()
    calm = _study_file(tmp_path / "calm", fake_dataset, name="calm", space=space)
    chaos = _study_file(tmp_path / "chaos", fake_dataset, name="chaos", space=space, heartbeat_interval=1,
                        grace_period=3, max_retry=4)
    p = _run_sweep(calm, "--workers", "2")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    rng = random.Random(0)
    groups, kills, deadline = [], 0, time.time() + 600
    p = _run_sweep(chaos, "--workers", "2")
    groups.append(p.pid)
    while kills < 3 and p.poll() is None and time.time() < deadline:
        time.sleep(rng.uniform(3, 8))
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        victim = rng.choice([p.pid, *map(int, kids)])
        try:
            os.kill(victim, signal.SIGKILL)
            kills += 1
        except ProcessLookupError:
            pass
        if victim == p.pid:  # the driver died (its other worker may run on, orphaned): launch the sweep again
            p.wait()
            p = _run_sweep(chaos, "--workers", "2")
            groups.append(p.pid)
    while True:  # relaunch until a driver finishes the study
        out, _ = p.communicate(timeout=max(1, deadline - time.time()))
        if p.returncode == 0:
            break
        p = _run_sweep(chaos, "--workers", "2")
        groups.append(p.pid)
    while any(_group_alive(g) for g in groups) and time.time() < deadline:  # orphaned workers end on their own
        time.sleep(0.5)
    assert kills == 3
    calm_s, chaos_s = Study.load(calm), Study.load(chaos)
    _assert_each_cell_once(chaos_s)
    assert _cell_table(chaos_s) == pytest.approx(_cell_table(calm_s))
    run_dirs = glob.glob(str(tmp_path / "chaos" / "sweeps" / "chaos" / "*" / "seed0"))
    assert len(run_dirs) == 8
    for d in run_dirs:
        assert (Path(d) / "final.json").exists() and not glob.glob(f"{d}/**/*.tmp", recursive=True)


def test_a_trial_interrupted_at_two_session_ends_is_retried_each_time(tmp_path, fake_dataset):
    """A long study on a machine stopped every few hours: the same trial's worker dies twice. With a single retry
    the second stop lost the trial for good (the joint TPE study lost two that way); the default retries it."""
    from optuna.storages import fail_stale_trials

    study = Study.load(_study_file(tmp_path, fake_dataset, name="twice", sampler="tpe", trials=3, heartbeat_interval=1,
                                   grace_period=1, space={"points.n_per_class": {"type": "int", "low": 1, "high": 9}}))
    s = open_study(study, make_storage(study))
    params = None
    for stop in range(2):
        trial = s.ask()  # the first draw, then the retry that fail_stale_trials enqueued
        n = trial.suggest_int("points.n_per_class", 1, 9)
        params = params or {"points.n_per_class": n}
        assert {"points.n_per_class": n} == params
        s._storage.record_heartbeat(trial._trial_id)  # a worker trains it ... and dies without a word
        time.sleep(2.5)
        with _experimental_ok():
            fail_stale_trials(s)
        waiting = [t for t in s.get_trials(deepcopy=False) if t.state == TrialState.WAITING]
        assert [t.params for t in waiting] == [params], f"stop {stop + 1}: the trial was not queued again"


def test_a_space_over_the_budget_needs_one_set_of_val_clicks(tmp_path, fake_dataset):
    """Scored on val clicks drawn at each trial's own budget, a 1-click and a 20-click trial are two metrics."""
    path = _study_file(tmp_path, fake_dataset, name="budget")
    raw = yaml.safe_load(path.read_text())
    raw["overrides"] = [o for o in raw["overrides"] if not o.startswith("eval.val_points_per_class")]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SweepError, match="budget.yaml: the space varies points.n_per_class.*val_points_per_class"):
        Study.load(path)
    raw["search"]["space"] = {"loss.gamma": {"choices": [0.0, 2.0]}}  # a fixed budget: its own val clicks are one set
    path.write_text(yaml.safe_dump(raw))
    Study.load(path)


@pytest.mark.parametrize("path", search_files(ROOT / "experiments" / "studies"), ids=lambda p: p.name)
def test_every_shipped_search_passes_its_checks(path):
    Study.load(path)  # unknown keys, spaces, the objective, one set of val clicks when the budget varies


@pytest.mark.parametrize("start", [1, 4])
def test_the_median_pruner_acts_from_the_epoch_the_study_names(tmp_path, fake_dataset, start):
    study = Study.load(_study_file(tmp_path, fake_dataset, name=f"warm{start}", sampler="tpe", trials=3,
                                   pruner="median", startup_trials=2, prune_from_epoch=start))
    s = optuna.create_study(direction="maximize", pruner=study.make_pruner())
    for _ in range(2):  # two good trials the median is taken over, reporting epochs 1..8 as the trainer does
        t = s.ask()
        for epoch in range(1, 9):
            t.report(0.5, epoch)
        s.tell(t, 0.5)
    poor = s.ask()
    stops = []
    for epoch in range(1, 9):
        poor.report(0.1, epoch)
        stops.append(poor.should_prune())
    assert stops.index(True) + 1 == start  # the first epoch at which it would be stopped
    with pytest.raises(SweepError, match="prune_from_epoch counts epochs from 1"):
        Study.load(_study_file(tmp_path, fake_dataset, name="warm0", sampler="tpe", trials=3, pruner="median",
                               prune_from_epoch=0))


@pytest.mark.parametrize("path", search_files(ROOT / "experiments" / "studies"), ids=lambda p: p.name)
def test_every_committed_search_record_is_its_files_study_and_computes_its_exports(path):
    """A search's record (results/sweeps/<name>.json) is refused when its file no longer describes it; each seed
    export of its trials must still be the run the file computes for those parameters."""
    from sweeps.run import _exported_run, _slug, committed_record

    study = Study.load(path)
    rec = committed_record(study)
    if rec is None:
        pytest.skip(f"{study.name}: not run yet")
    found = 0
    for t in rec["trials"]:
        for s in range(study.seeds_per_config):
            cfg = study.config_for(t["params"], seed=s, extra=[f"name={study.name}/{_slug(t['params'])}",
                                                                f"export_dir={ROOT / 'results'}"])
            found += _exported_run(cfg) is not None  # another config under that name raises
    assert found > 0
