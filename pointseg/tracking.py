"""Experiment tracking through W&B's own offline mode: works with no network, `wandb sync <run>/wandb` later.

The trainer only calls :class:`Tracker`; with ``mode=disabled`` nothing of wandb is touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Tracker:
    def __init__(self, mode: str, project: str, run_dir: Path, name: str, config: dict[str, Any],
                 group: str | None = None, tags: list[str] | None = None):
        self.run = None
        if mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(mode=mode, project=project, dir=str(run_dir), name=name, group=group,
                              tags=tags or None, config=config, reinit="finish_previous",
                              settings=wandb.Settings(console="off", quiet=True))

    @property
    def directory(self) -> str | None:
        return None if self.run is None else self.run.dir

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def images(self, key: str, panels: list[tuple[Any, str]], step: int | None = None) -> None:
        """Log pictures (h×w×3 uint8 arrays) with captions, e.g. predictions with their clicks."""
        if self.run is not None and panels:
            import wandb

            self.run.log({key: [wandb.Image(a, caption=c) for a, c in panels]}, step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in metrics.items() if v is not None})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
