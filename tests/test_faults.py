"""Storage faults and concurrent runs: each is a clear error or a logged skip, never a half-written result.

A full disk and a read-only folder are simulated by patching the writes (the tests may run as root, for whom
chmod protects nothing)."""

from __future__ import annotations

import errno
import logging
import multiprocessing as mp
from pathlib import Path

import pytest

import pointseg.io as io_mod
from pointseg.runlock import RunLock
from pointseg.train import TrainingError, fit


def _leftover_tmp(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.rglob("*.tmp")] if run_dir.exists() else []


def _full_disk_on(monkeypatch, name: str):
    """Make the atomic write of files called ``name`` fail as a full disk does, halfway through the write."""
    real = io_mod._write_text

    def write(tmp: Path, text: str) -> None:
        if tmp.name.startswith(f".{name}."):
            with open(tmp, "w") as f:
                f.write(text[: len(text) // 2])  # half of it reached the disk
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        real(tmp, text)

    monkeypatch.setattr(io_mod, "_write_text", write)


def test_full_disk_at_the_first_write_stops_before_training(tiny_config, monkeypatch, tmp_path):
    _full_disk_on(monkeypatch, "config.yaml")
    cfg = tiny_config("experiments/points.yaml")
    with pytest.raises(TrainingError, match=r"config\.yaml.*cannot write \(No space left on device\).*resume"):
        fit(cfg, progress=False)
    run_dir = Path(cfg.out_dir) / cfg.name / "seed0"
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "last.pt").exists()
    assert _leftover_tmp(run_dir) == []


def test_full_disk_at_final_json_keeps_the_epochs_and_resumes(tiny_config, monkeypatch):
    cfg = tiny_config("experiments/points.yaml")
    run_dir = Path(cfg.out_dir) / cfg.name / "seed0"
    _full_disk_on(monkeypatch, "final.json")
    with pytest.raises(TrainingError, match=r"final\.json.*No space left on device"):
        fit(cfg, progress=False)
    assert not (run_dir / "final.json").exists() and _leftover_tmp(run_dir) == []
    assert (run_dir / "last.pt").exists() and len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    monkeypatch.undo()  # space freed: the same command finishes the run without training again
    res = fit(cfg, progress=False)
    assert (run_dir / "final.json").exists() and len(res.history) == 2


def test_read_only_run_folder_is_a_clear_error_before_training(tiny_config, monkeypatch):
    cfg = tiny_config("experiments/points.yaml")

    def mkdir(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(TrainingError, match="Read-only file system"):
        fit(cfg, progress=False)


def test_truncated_last_pt_is_an_error_naming_it(tiny_config):
    cfg = tiny_config("experiments/points.yaml")
    run_dir = Path(cfg.out_dir) / cfg.name / "seed0"

    def crash(epoch, row):
        raise KeyboardInterrupt  # the run dies after its first epoch

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callback=crash, progress=False)
    last = run_dir / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short / a full disk
    with pytest.raises(TrainingError, match=r"last\.pt: truncated or corrupt checkpoint.*delete it"):
        fit(cfg, progress=False)


def test_wandb_failure_is_logged_and_training_goes_on(tiny_config, monkeypatch, caplog):
    import wandb

    def broken_init(*a, **k):
        raise PermissionError(13, "Permission denied", "wandb")

    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = tiny_config("experiments/points.yaml", ["wandb.mode=offline"])
    with caplog.at_level(logging.WARNING, logger="pointseg.tracking"):
        res = fit(cfg, progress=False)
    assert "W&B could not start" in caplog.text and (res.run_dir / "final.json").exists()


def _hold_lock(run_dir: str, ready, release) -> None:
    RunLock(run_dir).acquire()
    ready.set()
    release.wait(60)


def test_the_same_run_launched_twice_is_refused(tiny_config):
    cfg = tiny_config("experiments/points.yaml")
    run_dir = Path(cfg.out_dir) / cfg.name / "seed0"
    run_dir.mkdir(parents=True)
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(run_dir), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(TrainingError, match=rf"another process \(pid {holder.pid}\) is training this run"):
            fit(cfg, progress=False)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing of the first one overwritten
    finally:
        holder.kill()  # kill -9 the first: the kernel drops its lock, no stale lock remains
        holder.join()
    assert (fit(cfg, progress=False).run_dir / "final.json").exists()
