"""Optuna driver: one trial = one (or seeds_per_config) run(s) of the shared trainer ``pointseg.train.fit``.

    python -m sweeps experiments/studies/points-grid.yaml [--trials N] [--storage URL] [--workers N]

Resumable: finished trials are kept; a trial whose worker died (Ctrl-C, kill -9, lost machine) stops sending
heartbeats, is failed after the grace period and retried (RetryHeartbeatStaleTrialCallback, ``max_retry``
times); its run directory is keyed by its parameters, so the retry resumes the killed run from its last epoch.
Grid cells are enqueued once, when the study is created, and claimed atomically by the storage, so no cell runs
twice or is skipped, also with many workers on one PostgreSQL database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import signal
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState

from pointseg.progress import bar as progress_bar
from pointseg.progress import say_error

from .record import FINISHED, frozen_trial, load_record, record_path, write_record
from .search import Study, SweepError
from .storage import experimental_ok as _experimental_ok
from .storage import open_storage

log = logging.getLogger("pointseg.sweep")
MAX_FAILED_IN_A_ROW = 3  # a worker stops after this many of its trials failed one after another
_CELL = "grid_cell"  # user attribute naming a trial's grid cell; trials without it in a grid study are no cell


def make_storage(study: Study) -> RDBStorage:
    return open_storage(study.storage_url(), study.heartbeat_interval, study.grace_period, study.max_retry,
                        SweepError)


def cell_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _slug(params: dict[str, Any]) -> str:
    short = "_".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(params.items()))[:80]
    return f"{short}-{hashlib.sha1(cell_key(params).encode()).hexdigest()[:8]}"


def open_study(study: Study, storage: RDBStorage) -> optuna.Study:
    """Create the study (and enqueue every grid cell, once; or restore a TPE study's committed record) or load it
    and check it is the same study."""
    record = committed_record(study)  # checked first: a record of another study must not be overwritten
    try:
        s = optuna.create_study(study_name=study.name, storage=storage, direction=study.direction,
                                sampler=study.make_sampler(), pruner=study.make_pruner())
        if study.sampler == "grid":
            for params in study.grid():
                s.enqueue_trial(params, user_attrs={_CELL: cell_key(params)})
        elif record is not None:
            restore_from_record(s, record)
        s.set_user_attr("fingerprint", study.fingerprint())  # last: marks the study as ready
        return s
    except optuna.exceptions.DuplicatedStudyError:
        s = optuna.load_study(study_name=study.name, storage=storage, sampler=study.make_sampler(),
                              pruner=study.make_pruner())
        for _ in range(120):  # another worker may be enqueuing the grid right now
            stored = s.user_attrs.get("fingerprint")
            if stored is not None:
                break
            time.sleep(0.5)
        if stored is not None and not _same_fingerprint(stored, study):
            raise SweepError(f"a study named {study.name!r} already exists in {study.storage_url()} with another "
                             f"space or base config; stored: {stored}; rename the study or use another storage")
        return s


def _same_fingerprint(stored: dict[str, Any], study: Study) -> bool:
    """Whether a stored fingerprint (the storage's, or a record's) is that of ``study``."""
    return json.dumps(stored, sort_keys=True) == json.dumps(study.fingerprint(), sort_keys=True)


def committed_record(study: Study) -> dict[str, Any] | None:
    """The study's committed record (results/sweeps/<name>.json), or None; one of another space or base config
    under this name is an error, so that neither study overwrites the other's record."""
    path = record_path(study)
    if not path.exists():
        return None
    try:
        rec = load_record(path)
    except ValueError as e:
        raise SweepError(f"{e}; move it away to start the study {study.name!r} anew") from None
    stored = {k: rec.get(k) for k in study.fingerprint()}
    if not _same_fingerprint(stored, study):
        raise SweepError(f"{path} records a study named {study.name!r} with another space or base config "
                         f"({stored}); move it away or rename the study, so that neither overwrites the other")
    return rec


def restore_from_record(s: optuna.Study, rec: dict[str, Any]) -> None:
    """Fill a new, empty storage from the study's committed record: a fresh clone or a new session goes on with the
    study instead of starting it again. Finished trials come back as they were, under their numbers (the sampler
    draws each trial from its number, so later draws are those of an unbroken study); a trial the record saw
    running or waiting had its worker stopped: it is failed under its number and queued again with its
    parameters, as a stale trial would have been."""
    trials = sorted(rec["trials"], key=lambda t: t["number"])
    retry = []
    for t in trials:
        finished = TrialState[t["state"]] in FINISHED
        s.add_trial(frozen_trial(t, None if finished else TrialState.FAIL))
        if not finished:
            retry.append(t["params"])
    for params in retry:
        s.enqueue_trial(params)
    if [t.number for t in s.get_trials(deepcopy=False)][:len(trials)] != [t["number"] for t in trials]:
        log.warning("%s: its trials are restored under other numbers than recorded; later draws differ", rec["name"])
    log.info("%s: %d trials restored from its record, %d queued again", rec["name"], len(trials), len(retry))


def make_objective(study: Study):
    def objective(trial: optuna.Trial) -> float:
        try:
            return run_trial(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:  # kept with the trial: the record and the "failed in a row" error can name it
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise

    def run_trial(trial: optuna.Trial) -> float:
        if study.sampler == "grid" and _CELL not in trial.user_attrs:
            # lost a race for the last cell: record that this trial trained nothing
            trial.set_user_attr("skipped", "grid exhausted")
            raise optuna.TrialPruned("no grid cell left")
        params = study.suggest(trial)
        finals, run_dirs = [], []
        for s in range(study.seeds_per_config):
            run_dir = Path(study.out_dir) / study.name / _slug(params) / f"seed{s}"
            final = _run_seed(study, trial, params, s, run_dir)
            finals.append({k: v for k, v in final.items() if not isinstance(v, (dict, list))})
            run_dirs.append(str(run_dir))
            trial.set_user_attr("run_dirs", run_dirs)
            trial.set_user_attr("runs", finals)  # every metric of every seed: the study alone rebuilds the tables
        keys = [k for k, v in finals[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for k in keys:
            vals = [f[k] for f in finals if f.get(k) is not None]
            if vals:
                trial.set_user_attr(k, sum(vals) / len(vals))
        return float(sum(f[study.objective] for f in finals) / len(finals))

    return objective


def _run_seed(study: Study, trial: optuna.Trial, params: dict, seed: int, run_dir: Path) -> dict[str, Any]:
    """One seed of a trial: its final metrics, trained here or read from its export. The first seed's per-epoch
    objective goes to the pruner, the same values whether it trained or was read back."""
    from pointseg.train import fit

    # the name (hence the export results/<study>/<cell>/seed<k>.json) is the trial's cell
    cfg = study.config_for(params, seed=seed, extra=[f"name={study.name}/{_slug(params)}",
                                                     f"wandb.group={study.name}",
                                                     f"export_dir={Path(study.export_dir).parent}"])
    cfg.wandb.tags = [study.name, f"trial-{trial.number}"]

    def report(epoch: int, row: dict) -> None:
        if seed == 0 and study.pruner != "none" and study.objective in row:
            trial.report(row[study.objective], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    exported = _exported_run(cfg)
    if exported is None:
        return fit(cfg, run_dir=run_dir, callback=report, progress=False).final
    for row in exported["history"]:  # finished elsewhere (another machine, a removed run directory)
        report(row["epoch"], row)
    return exported["final"]


def _exported_run(cfg) -> dict[str, Any] | None:
    """A seed whose export is there (results/<study>/<cell>/seed<k>.json, copied back from another machine, or
    left when its run directory was removed) is read back, not trained again: a trial resumes from the exports,
    which are small enough to carry where run directories are not. An export of another config is an error."""
    from pointseg.export import read_export

    if not cfg.export_dir:
        return None
    path, rec = read_export(cfg, lambda p, keys: SweepError(f"{p} holds a run of another config ({keys}); move it "
                                                            "away or give the study another name"))
    if rec is not None:
        log.info("%s: exported already, read back instead of training", path)
    return rec


def _counts(s: optuna.Study, grid: bool) -> dict[str, int]:
    trials = s.get_trials(deepcopy=False)
    real = [t for t in trials if not t.user_attrs.get("skipped")]
    c = {st: sum(t.state == st for t in real) for st in TrialState}
    c["finished"] = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
    if grid:  # a cell is done once one of its trials finished
        ended = (TrialState.COMPLETE, TrialState.PRUNED)
        c["cells_done"] = len({t.user_attrs.get(_CELL) for t in real if t.state in ended})
    return c


def worker(study: Study, progress: bool = True) -> None:
    """Run trials until the study's budget is spent (grid: every cell finished)."""
    if study.seeds_per_config < 2:
        log.warning("%s: seeds_per_config=%d: each trial's value rests on one seed; set 3 for a result to report",
                    study.name, study.seeds_per_config)
    storage = make_storage(study)
    s = open_study(study, storage)
    objective = make_objective(study)
    grid = study.sampler == "grid"
    budget = study.budget
    bar = progress_bar(total=budget, desc=f"study {study.name}", unit="trial", disable=not progress)
    failed_in_a_row = 0
    while True:
        with _experimental_ok():
            fail_stale_trials(s)  # a dead worker's trial → FAIL → re-enqueued once as WAITING
        c = _counts(s, grid)
        done = c["cells_done"] if grid else c["finished"]
        bar.n = min(done, budget)
        bar.refresh()
        if grid:
            if c[TrialState.WAITING] == 0:
                if c[TrialState.RUNNING] == 0:
                    break
                time.sleep(min(5, study.heartbeat_interval))  # another worker's cell; it may yet die
                continue
        elif done + c[TrialState.RUNNING] + c[TrialState.WAITING] >= budget and c[TrialState.WAITING] == 0:
            if c[TrialState.RUNNING] == 0:
                break
            time.sleep(min(5, study.heartbeat_interval))
            continue
        ended: list[optuna.trial.FrozenTrial] = []
        s.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                   callbacks=[lambda _s, t: ended.append(t)])
        write_record(s, study)  # after every trial: a stopped sweep keeps every finished trial's record
        failed_in_a_row = failed_in_a_row + 1 if ended and ended[-1].state == TrialState.FAIL else 0
        if failed_in_a_row >= MAX_FAILED_IN_A_ROW:  # a broken setup fails every trial: say so, do not loop
            t = ended[-1]
            raise SweepError(f"{study.name}: {failed_in_a_row} trials in a row failed; the last (trial {t.number}): "
                             f"{t.user_attrs.get('error', 'see the log above')}")
    bar.close()
    export(s, study)
    write_record(s, study)


def export(s: optuna.Study, study: Study) -> Path:
    """The study's trials with params and user attributes as CSV (for people; the report reads the study)."""
    from pointseg.io import atomic_write_text

    df = s.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    path = Path(study.out_dir) / f"{study.name}.csv"
    atomic_write_text(path, df.to_csv(index=False))
    return path


def with_workers(n: int, entry, entry_args: tuple, work) -> None:
    """``work()`` here beside ``n - 1`` spawned processes running ``entry(*entry_args)``; stopped (SIGTERM, Ctrl-C)
    or failed, no process trains on without its parent."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=entry, args=entry_args) for _ in range(n - 1)]
    for p in procs:
        p.start()
    try:
        work()
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=30)


def _worker_entry(path: str, overrides: dict) -> None:
    logging.basicConfig(level=logging.WARNING)
    worker(Study.load(path, **overrides), progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="experiments/studies/points-grid.yaml")
    ap.add_argument("--trials", type=int, help="trial budget (tpe); a grid runs every cell")
    ap.add_argument("--storage", help="sqlite:///file.db (default runs/sweeps/<name>.db) or postgresql://…")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    ap.add_argument("--grace-period", type=int, help="seconds without heartbeat before a trial counts as dead")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overrides = {"trials": args.trials, "storage": args.storage, "grace_period": args.grace_period}
    # `kill PID` (SIGTERM) unwinds like Ctrl-C, so the workers this process started are stopped with it; their
    # trials go stale and the next `make sweep` retries them, resuming each run where it stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        study = Study.load(args.study, **overrides)
        open_study(study, make_storage(study))  # every check (space, storage, same-name study) before training
        t0 = time.time()
        with_workers(args.workers, _worker_entry, (args.study, overrides), lambda: worker(study))
        s = optuna.load_study(study_name=study.name, storage=make_storage(study))
        print(f"study {study.name}: {len(s.trials)} trials in {time.time() - t0:.0f} s; "
              f"table: {Path(study.out_dir) / (study.name + '.csv')}")
        rows = [t for t in s.trials if t.state == TrialState.COMPLETE]
        for t in sorted(rows, key=lambda t: -(t.value or 0)):
            print(f"  {t.params}  val mIoU {t.value:.4f}  test mIoU {t.user_attrs.get('test/miou', float('nan')):.4f}")
    except SweepError as e:
        say_error(str(e))
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
