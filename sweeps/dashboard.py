"""optuna-dashboard on the studies' storage: every unit of a study file (and every trial of a search) in a
browser, live, with no account and no internet.

    python -m sweeps.dashboard [--storage sqlite:///runs/studies/optuna.db] [--port 8080]     (make dashboard)

Each unit is a trial whose user attributes name it (``unit``: cell@seed) and the worker that holds it
(``worker``: host:pid); its value is the study's metric (test mIoU) once exported. A search's storage
(``runs/sweeps/<name>.db``) opens the same way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pointseg.progress import say_error


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweeps.dashboard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", default="sqlite:///runs/studies/optuna.db",
                    help="the storage the workers share (sqlite:///… or postgresql://…)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args(argv)
    if args.storage.startswith("sqlite:///") and not Path(args.storage[len("sqlite:///"):]).exists():
        say_error(f"no study storage at {args.storage[len('sqlite:///'):]}: run a study first (make study FILE=…), "
                  "or name another with --storage")
        return 2
    from optuna_dashboard import run_server

    print(f"optuna-dashboard on {args.storage}: http://{args.host}:{args.port}/dashboard (Ctrl-C stops it)",
          flush=True)
    run_server(args.storage, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
