"""One command for every study file: ``python -m sweeps FILE…`` (``make study FILE=…``, ``make sweep``).

    python -m sweeps experiments/studies/convergence.yaml                      # its cells × seeds (sweeps.units)
    python -m sweeps experiments/studies/a.yaml:cell,cell@0 b.yaml --workers 2 --deadline-min 150
    python -m sweeps experiments/studies/points-grid.yaml --workers 2           # a search (sweeps.run)
    python -m sweeps FILE --storage postgresql://user@host/db                   # on as many machines as you like

Cells and seeds run as units of one Optuna study per file in the storage (SQLite under ``--out-dir`` by default);
a file with a ``search:`` block runs as an Optuna search. Workers on several machines share a PostgreSQL storage:
start the same command on each. A killed worker's unit is queued again after the grace period and resumes from its
last epoch.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

from pointseg.config import ConfigError
from pointseg.progress import say_error, setup_logging

from .studyfile import is_search


def _worker(args: argparse.Namespace, deadline: float) -> None:
    from .units import Worker, open_units

    studies = open_units(args.specs, args.storage, args.export_dir, args.heartbeat, args.grace_period, args.max_retry,
                         out_dir=args.out_dir)
    Worker(studies, tuple(args.set), args.out_dir, args.export_dir, deadline, args.expect_min * 60,
           poll_s=min(5.0, args.heartbeat)).work()


def _worker_entry(args: argparse.Namespace, deadline: float) -> None:
    setup_logging(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _worker(args, deadline)


def run_units(args: argparse.Namespace) -> int:
    from .run import with_workers
    from .units import left, open_units

    deadline = time.time() + args.deadline_min * 60 if math.isfinite(args.deadline_min) else math.inf
    studies = open_units(args.specs, args.storage, args.export_dir, args.heartbeat, args.grace_period,
                         args.max_retry, out_dir=args.out_dir)  # every file, cell and seed checked, units queued
    with_workers(args.workers, _worker_entry, (args, deadline), lambda: _worker(args, deadline))
    report = left(studies)
    for key, names in report.items():
        print(f"{key}: {len(names)}" + "".join(f"\n  {n}" for n in names), flush=True)
    return 1 if report["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+", help="study files, each optionally FILE:cell,cell and @seed,seed")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    ap.add_argument("--trials", type=int, help="a search's trial budget (tpe; a grid runs every cell)")
    ap.add_argument("--storage", help="sqlite:///file.db (default <out-dir>/optuna.db) or postgresql://…")
    ap.add_argument("--deadline-min", type=float, default=math.inf, help="start no unit that would end later")
    ap.add_argument("--expect-min", type=float, default=10.0, help="a unit's time until one has been trained")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="machine settings for every run (wandb.mode=disabled train.threads=1 train.device=cuda …)")
    ap.add_argument("--out-dir", default="runs/studies")
    ap.add_argument("--export-dir", default="results")
    ap.add_argument("--heartbeat", type=int, default=30, help="seconds between a worker's heartbeats")
    ap.add_argument("--grace-period", type=int, default=120, help="seconds without heartbeat before a unit is dead")
    ap.add_argument("--max-retry", type=int, default=5, help="times a dead worker's unit is queued again")
    args = ap.parse_args(argv)
    setup_logging(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    searches = [s for s in args.specs if is_search(s)]
    if searches:
        if len(args.specs) > 1:
            say_error(f"a search ({searches[0]}) runs alone: give it as the only file")
            return 2
        from .run import main as run_search

        return run_search(["--study", searches[0], "--workers", str(args.workers),
                           *(["--storage", args.storage] if args.storage else []),
                           *(["--trials", str(args.trials)] if args.trials else [])])
    args.storage = args.storage or f"sqlite:///{Path(args.out_dir) / 'optuna.db'}"
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    try:
        return run_units(args)
    except ConfigError as e:
        say_error(str(e))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
