"""Experiment tracking through W&B's own offline mode: works with no network, `wandb sync <run>/wandb` later.

The trainer only calls :class:`Tracker`; with ``mode=disabled`` nothing of wandb is touched. Tracking is a
convenience, never a reason to lose a run: any W&B failure (its folder unwritable, a full disk, a broken install)
is logged once and tracking stops, while training goes on and writes its own files as always.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("pointseg.tracking")


def _never_fatal(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.run is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 — whatever W&B raises, the run must go on
            log.warning("W&B %s failed (%s); training goes on without W&B tracking", method.__name__, str(e)[:300])
            self.run = None
            return None
    return wrapper


class Tracker:
    def __init__(self, mode: str, project: str, run_dir: Path, name: str, config: dict[str, Any],
                 group: str | None = None, tags: list[str] | None = None):
        self.run = None
        if mode == "disabled":
            return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(mode=mode, project=project, dir=str(run_dir), name=name, group=group,
                                  tags=tags or None, config=config, reinit="finish_previous",
                                  settings=wandb.Settings(console="off", quiet=True))
        except Exception as e:  # noqa: BLE001
            log.warning("W&B could not start in %s (%s); training goes on without W&B tracking", run_dir,
                        str(e)[:300])
            self.run = None

    @property
    def directory(self) -> str | None:
        return None if self.run is None else self.run.dir

    @_never_fatal
    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    @_never_fatal
    def images(self, key: str, panels: list[tuple[Any, str]], step: int | None = None) -> None:
        """Log pictures (h×w×3 uint8 arrays) with captions, e.g. predictions with their clicks."""
        if self.run is not None and panels:
            import wandb

            self.run.log({key: [wandb.Image(a, caption=c) for a, c in panels]}, step=step)

    @_never_fatal
    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in metrics.items() if v is not None})

    @_never_fatal
    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
