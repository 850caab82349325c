"""A study file's runs as units of work in one Optuna study: workers on one machine or many share them.

    python -m sweeps experiments/studies/convergence.yaml [--workers 2] [--storage postgresql://…]
    python -m sweeps A.yaml B.yaml:cell,cell C.yaml:cell@0 --workers 2 --deadline-min 150

Each (cell, seed) not exported yet is one trial of an Optuna study named after the study file, queued in the order
``sweeps.cells`` runs them (seed-major), in the storage (SQLite under runs/studies by default; PostgreSQL or any
database Optuna supports when workers on several machines share the study). A worker claims a waiting unit (the
storage makes the claim atomic), trains it with ``sweeps.cells`` in its own process and exports it. A worker that
dies stops its heartbeat: after the grace period its trial is failed and queued again (``max_retry`` times), and the
unit resumes from its last epoch. The exports are the truth: a unit whose export exists is never queued, and a unit
whose trial finished but whose export is gone is queued again.

A self-training cell whose teacher is a study's run (a cell of the same study, or of another one: its run directory
under the out dir) starts only once its teacher is exported; a teacher of the same study starts only when its
student also fits before the deadline (``--deadline-min``), and no unit starts that would end
after it by the median time of the units trained so far.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from pointseg.config import ConfigError
from pointseg.export import export_path

from .storage import UNITS_LOCK, experimental_ok, open_storage, storage_lock
from .studyfile import StudyFile, machine_has

log = logging.getLogger("pointseg.units")
UNIT = "unit"  # user attribute: "<cell>@<seed>"
AFTER = "after"  # user attribute: the unit that must be exported first (a student's teacher), "" for none
MAX_FAILED_IN_A_ROW = 3


@dataclass(frozen=True)
class Unit:
    cell: str
    seed: int
    after: str = ""  # "<cell>@<seed>" of this study

    @property
    def name(self) -> str:
        return f"{self.cell}@{self.seed}"


def parse_spec(spec: str) -> tuple[str, list[str] | None, list[int] | None]:
    """``FILE``, ``FILE:cell,cell``, ``FILE@seed,seed`` or ``FILE:cell,cell@seed,seed`` → (file, cells, seeds)."""
    spec, _, seeds = spec.partition("@")
    path, _, cells = spec.partition(":")
    return path, (cells.split(",") if cells else None), ([int(s) for s in seeds.split(",")] if seeds else None)


def _seeds(study: StudyFile, wanted: list[int] | None) -> list[int]:
    if wanted is None:
        return list(study.seeds)
    unknown = sorted(set(wanted) - set(study.seeds))
    if unknown:
        raise ConfigError(f"{study.path}: seeds {unknown} are not among the study's seeds {list(study.seeds)}")
    return wanted


def teacher_of(study: StudyFile, cell, seed: int, out_dir: str = "runs/studies") -> str:
    """The unit a self-training cell learns from when its teacher is a study's run (its run directory
    ``<out_dir>/<study>/<cell>/seed<k>``): ``cell@seed`` in this study, ``other-study/cell@seed`` in another one;
    "" for a teacher that is no study's run."""
    teacher = _teacher_dir(study, cell, seed)
    if teacher is None:
        return ""
    parts = teacher.parts
    if len(parts) < 3 or parts[-1] != f"seed{seed}":
        return ""
    if parts[-3] == study.name:
        return f"{parts[-2]}@{seed}"
    if Path(*parts[:-3]) == Path(out_dir):  # another study's run: its export says when the weights are there
        return f"{parts[-3]}/{parts[-2]}@{seed}"
    return ""


def _exported(study: StudyFile, unit_name: str, export_dir: str) -> bool:
    """Whether a unit's export exists: ``cell@seed`` of ``study``, or ``other-study/cell@seed``."""
    cell, _, seed = unit_name.partition("@")
    return export_path(export_dir, cell if "/" in cell else f"{study.name}/{cell}", int(seed)).exists()


def units(study: StudyFile, cells: list[str] | None = None, seeds: list[int] | None = None,
          export_dir: str = "results", out_dir: str = "runs/studies") -> list[Unit]:
    """The runs not exported yet, seed-major; a cell for another machine is left out, and a reused seed its source
    study has exported is copied (``sweeps.cells``), not queued."""
    out = []
    for seed in _seeds(study, seeds):
        for cell in study.chosen(cells):
            if not machine_has(cell):
                continue
            if cell.extra.get("reuse") and export_path(export_dir, cell.extra["reuse"], seed).exists():
                continue  # the worker copies it at once; a seed the reused study lacks is trained like any other
            if export_path(export_dir, f"{study.name}/{cell.id}", seed).exists():
                continue
            after = teacher_of(study, cell, seed, out_dir)
            weights = _teacher_dir(study, cell, seed) / "best.pt" if after else None
            if after and _exported(study, after, export_dir) and not weights.exists():
                log.warning("%s/%s@%d: not queued: its teacher %s is exported but its weights (%s) are not on this "
                            "machine; move the teacher's export away to train both again", study.name, cell.id,
                            seed, after, weights)
                continue
            out.append(Unit(cell.id, seed, after))
    return out


def _teacher_dir(study: StudyFile, cell, seed: int) -> Path | None:
    """The run directory a self-training cell's teacher lives in, None for a cell without one."""
    if "evaluate" in cell.extra:
        return None
    teacher = study.config(cell, seed).selftrain.teacher
    return Path(teacher.replace("{seed}", str(seed))) if teacher else None


def copy_reused(study: StudyFile, export_dir: str = "results") -> list[str]:
    """Copy every seed that a ``reuse:`` cell takes from another study's export (checked key by key, as
    ``sweeps.cells`` does; a differing config is an error): a copy takes no worker and no time."""
    from .cells import _reuse

    copied = []
    for seed in study.seeds:
        for cell in study.cells:
            if not cell.extra.get("reuse") or export_path(export_dir, f"{study.name}/{cell.id}", seed).exists():
                continue
            if _reuse(study, cell, seed, study.config(cell, seed, export_dir=export_dir)):
                copied.append(f"{study.name}/{cell.id} seed {seed}")
    return copied


def _held(s: optuna.Study) -> set[str]:
    """The units a waiting or running trial holds."""
    return {t.user_attrs.get(UNIT) for t in s.get_trials(deepcopy=False, states=(TrialState.WAITING,
                                                                                 TrialState.RUNNING))}


def queue_units(s: optuna.Study, study: StudyFile, todo: list[Unit], url: str, export_dir: str) -> int:
    """Queue each unit that no waiting or running trial holds and that is still not exported, under the lock every
    worker queues under (so two workers starting together queue it once). Returns how many were queued.

    ``todo`` was listed before the lock was taken: a unit that ended since then is COMPLETE, no longer held, and
    would be queued and run a second time. Its export is written before its trial ends, so the exports are read
    after the trials."""
    with storage_lock(url, UNITS_LOCK):
        held = _held(s)
        new = [u for u in todo if u.name not in held and not _exported(study, u.name, export_dir)]
        for u in new:
            s.enqueue_trial({}, user_attrs={UNIT: u.name, AFTER: u.after}, skip_if_exists=False)
    return len(new)


def _completed(s: optuna.Study, unit: str) -> bool:
    """Whether a trial that ran ``unit`` has completed."""
    return any(t.user_attrs.get(UNIT) == unit and not t.user_attrs.get("skipped")
               for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class RetryUnitOnce(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a dead worker's trial, under the queueing lock and only while no other trial holds the unit.

    Optuna fails a stale trial first and calls this afterwards; a worker starting in between finds the unit neither
    held nor exported and queues it itself. Without the check the unit was then queued twice and run twice."""

    def __init__(self, max_retry: int | None, url: str):
        super().__init__(max_retry=max_retry)
        self.url = url

    def __call__(self, study: optuna.Study, trial) -> None:
        with storage_lock(self.url, UNITS_LOCK):
            if trial.user_attrs.get(UNIT) not in _held(study):
                super().__call__(study, trial)


@dataclass
class Worker:
    """Runs the units of several study files, the first file's first, until none is left or the deadline."""

    studies: list[tuple[StudyFile, optuna.Study]]
    machine_settings: tuple[str, ...] = ()
    out_dir: str = "runs/studies"
    export_dir: str = "results"
    deadline: float = math.inf  # time.time() after which no unit may end
    expect_s: float = 600.0  # a unit's time until one has been trained
    poll_s: float = 5.0

    def expected(self, s: optuna.Study) -> float:
        took = [t.duration.total_seconds() for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("trained") and t.duration is not None]
        return statistics.median(took) if took else self.expect_s

    def gate(self, s: optuna.Study, waiting: list) -> tuple[float, set[str]]:
        """What every waiting unit's start is judged by, read once: a unit's expected time, and the teachers that
        a waiting student names."""
        return self.expected(s), {t.user_attrs.get(AFTER) for t in waiting}

    def runnable(self, study: StudyFile, trial, gate: tuple[float, set[str]]) -> bool:
        """A waiting unit may start now: its teacher is exported, it ends before the deadline, and (a teacher) its
        waiting student fits after it too."""
        after = trial.user_attrs.get(AFTER)
        if after and not _exported(study, after, self.export_dir):
            return False
        need, students = gate
        if trial.user_attrs.get(UNIT) in students:
            need *= 2
        return time.time() + need <= self.deadline

    def objective(self, study: StudyFile, s: optuna.Study):
        def run(trial: optuna.Trial) -> float:
            from .cells import run_study

            unit = trial.user_attrs.get(UNIT)
            if unit is None:  # lost the race for the last waiting unit: this trial trained nothing
                trial.set_user_attr("skipped", "no unit left")
                raise optuna.TrialPruned("no unit left")
            gate = self.gate(s, s.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            if not self.runnable(study, trial, gate):  # another worker took the runnable one first: queue it again
                s.enqueue_trial({}, user_attrs={UNIT: unit, AFTER: trial.user_attrs.get(AFTER, "")})
                trial.set_user_attr("skipped", "not runnable yet; queued again")
                raise optuna.TrialPruned("not runnable yet")
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # who holds it, for the dashboard
            cell, _, seed = unit.partition("@")
            was_exported = _exported(study, unit, self.export_dir)
            if was_exported and _completed(s, unit):  # however it came to be queued again, it is done once
                trial.set_user_attr("skipped", "exported by an earlier trial")
                raise optuna.TrialPruned("done already")
            try:
                run_study(study, [int(seed)], [cell], self.out_dir, self.export_dir, list(self.machine_settings))
            except Exception as e:  # kept with the trial: the worker's "failed in a row" error names it
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
                raise
            path = export_path(self.export_dir, f"{study.name}/{cell}", int(seed))
            if not path.exists():  # a cell for another machine, or a reused seed the source lacks
                trial.set_user_attr("skipped", "nothing exported on this machine")
                raise optuna.TrialPruned("nothing exported")
            trial.set_user_attr("trained", not was_exported)
            final = json.loads(path.read_text()).get("final", {})
            value = final.get(study.metric)
            return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
        return run

    def step(self) -> str:
        """Run one unit: "ran", "wait" (units are running elsewhere or wait for a teacher), or "done"."""
        busy = False
        for study, s in self.studies:
            with experimental_ok():
                fail_stale_trials(s)  # a dead worker's unit → FAIL → queued again (RetryHeartbeatStaleTrialCallback)
            waiting = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            running = s.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            gate = self.gate(s, waiting)
            if any(self.runnable(study, t, gate) for t in waiting):
                ended: list = []
                s.optimize(self.objective(study, s), n_trials=1, catch=(Exception,), gc_after_trial=True,
                           callbacks=[lambda _s, t: ended.append(t)])
                self.last = ended[-1] if ended else None
                return "ran"
            # a unit running elsewhere may yet end (and free a student) or die (and be queued again)
            busy = busy or (bool(running) and time.time() < self.deadline)
        return "wait" if busy else "done"

    def work(self) -> None:
        failed_in_a_row = 0
        self.last = None
        while True:
            what = self.step()
            if what == "done":
                return
            if what == "wait":
                time.sleep(self.poll_s)
                continue
            failed = self.last is not None and self.last.state == TrialState.FAIL
            failed_in_a_row = failed_in_a_row + 1 if failed else 0
            if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                raise ConfigError(f"{failed_in_a_row} units in a row failed; the last ({self.last.user_attrs.get(UNIT)}"
                                  f"): {self.last.user_attrs.get('error', 'see the log above')}")


def left(studies: list[tuple[StudyFile, optuna.Study]]) -> dict[str, list[str]]:
    """What a finished worker leaves: {"failed", "not started"} → "study/cell@seed"."""
    out: dict[str, list[str]] = {"failed": [], "not started": []}
    for study, s in studies:
        trials = s.get_trials(deepcopy=False)

        def held(*states):
            return {t.user_attrs.get(UNIT) for t in trials if t.state in states and not t.user_attrs.get("skipped")}

        waiting = held(TrialState.WAITING, TrialState.RUNNING)
        out["failed"] += [f"{study.name}/{u}" for u in sorted(held(TrialState.FAIL) - held(TrialState.COMPLETE)
                                                               - waiting)]
        out["not started"] += [f"{study.name}/{u}" for u in sorted(waiting)]
    return out


def open_units(specs: list[str], url: str, export_dir: str = "results", heartbeat_interval: int = 30,
               grace_period: int = 120, max_retry: int = 5,
               out_dir: str = "runs/studies") -> list[tuple[StudyFile, optuna.Study]]:
    """Every study file's Optuna study in the storage at ``url``, with its unexported units queued; every file,
    cell and seed is checked before anything is queued."""
    with experimental_ok():
        retry = RetryUnitOnce(max_retry, url)
    storage = open_storage(url, heartbeat_interval, grace_period, max_retry, ConfigError, retry)
    chosen = []
    for spec in specs:
        path, cells, seeds = parse_spec(spec)
        study = StudyFile.load(path)
        study.chosen(cells)  # an unknown cell is an error before anything is queued
        _seeds(study, seeds)
        chosen.append((study, cells, seeds))
    out: dict[str, tuple[StudyFile, optuna.Study]] = {}  # one Optuna study per study file, however often named
    for study, cells, seeds in chosen:
        if study.name not in out:
            copied = copy_reused(study, export_dir)
            if copied:
                log.info("%s: copied %d reused runs from other studies' exports", study.name, len(copied))
            out[study.name] = (study, optuna.create_study(study_name=study.name, storage=storage,
                                                          direction="maximize", load_if_exists=True))
        n = queue_units(out[study.name][1], study, units(study, cells, seeds, export_dir, out_dir), url, export_dir)
        log.info("%s: %d units queued", study.name, n)
    return list(out.values())
