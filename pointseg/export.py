"""A finished run's small, committable record: what ran (config, seed, code version) and what it measured.

``results/<name>/seed<k>.json`` holds the config, the git commit and whether the tree was dirty, the point budget,
the selection rule, per-class IoU, the test confusion matrix in total and per test image (so a report can bootstrap
over images and seeds), the val curve, the wall times and thumbnails of a few predictions. No checkpoint: a few
tens of kB per run. ``make report`` reads
only these files, so a fresh clone rebuilds the report without training.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .io import write_json

EXPORT_VERSION = 1


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None}: the git state of the package's checkout."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    # a copy of the tree shipped elsewhere (a GPU machine) says what it was copied from: its .git, if any, may be
    # stale (one was: it named the session's first commit, dirty, for a tree that was a later commit, clean)
    env = os.environ.get("POINTSEG_COMMIT")
    if env:
        return {"commit": env, "dirty": os.environ.get("POINTSEG_DIRTY") != "0"}  # unsaid = dirty
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    # results/ and runs/ change while studies run; they are outputs, not code
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results",
                 ":(top,exclude)report")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def machine(device: str) -> dict[str, Any]:
    """Where a run ran: studies may mix machines, and the report says which cell ran where."""

    # the CPU's model and the vector instructions torch uses on it: kernels differ between them, and so do the
    # rounding of float sums and the trained model (the report's "Reruns" section measured how much)
    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "cpus": os.cpu_count(), "processor": platform.machine(), "cpu_model": cpu_model(),
                           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


@functools.lru_cache(maxsize=1)
def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says, else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def export_path(export_dir: str | Path, name: str, seed: int) -> Path:
    return Path(export_dir) / name / f"seed{seed}.json"


def export_run(path: Path, config: dict[str, Any], final: dict[str, Any], history: list[dict[str, Any]],
               points_info: dict[str, Any], code: dict[str, Any], samples: dict[str, Any] | None = None,
               machine: dict[str, Any] | None = None) -> Path:
    record = {
        "export_version": EXPORT_VERSION,
        "name": config["name"], "seed": config["seed"], "code": code, "config": config, "machine": machine,
        "points": {k: v for k, v in points_info.items() if k != "images_without_points"},
        "final": final, "history": history,
    }
    if samples is not None:  # thumbnails of a few predictions (pointseg/samples.py), for the report's panel
        record["samples"] = samples
    write_json(path, record)
    return path


def read_export(cfg, refuse: Callable[[Path, str], Exception],
                name: str | None = None) -> tuple[Path, dict[str, Any] | None]:
    """The export this run would write, or run ``name``'s of the same seed: (path, its record or None when absent).
    A stored run of another config raises ``refuse(path, keys)`` (keys: the first differing config keys), so the
    study runner and the sweep each refuse it in their own words and never take it for this run."""
    from .config import config_differences, load_config

    path = export_path(cfg.export_dir, name or cfg.name, cfg.seed)
    if not path.exists():
        return path, None
    rec = json.loads(path.read_text())
    diff = config_differences(load_config(None, rec["config"]), cfg)
    if diff:
        raise refuse(path, ", ".join(diff[:5]))
    return path, rec
