"""A user's data and checkpoints are theirs: an ad-hoc run writes nothing outside its run directory, and a
checkpoint is read as data, never as code (a pickle payload in ``best.pt`` or in a teacher is refused unrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointseg.config import load_config
from pointseg.data.raster import DataError
from pointseg.train import fit
from tests.conftest import ROOT, tiny_overrides

_SKIP = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "data", "logs"}


def _checkout_state() -> dict[str, tuple[int, int]]:
    """Every file of the checkout (but the environment, caches and the data link) with its size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in _SKIP]
        for f in filenames:
            p = Path(dirpath) / f
            st = p.lstat()
            out[str(p.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns)
    return out


def _ad_hoc(fake_dataset: Path, runs: Path) -> list[str]:
    """The tiny overrides as a user's ad-hoc run has them: no export_dir (the default)."""
    return [o for o in tiny_overrides(fake_dataset, runs) if not o.startswith("export_dir=")]


def test_an_ad_hoc_run_with_a_run_dir_outside_leaves_the_checkout_unchanged(fake_dataset, tmp_path):
    before = _checkout_state()
    run_dir = tmp_path / "my-run"
    proc = subprocess.run([sys.executable, "-m", "pointseg", "train", "--config", "experiments/points.yaml",
                           "--run-dir", str(run_dir), *_ad_hoc(fake_dataset, tmp_path / "runs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "export.json").exists() and (run_dir / "best.pt").exists()
    assert "samples" in (run_dir / "export.json").read_text()  # the thumbnails stay with the run
    after = _checkout_state()
    # a study's lanes may be training beside the tests (their runs/studies and results/<study>): not this run's
    changed = {k for k, v in after.items() if before.get(k) != v and not k.startswith("runs/studies/")
               and not (k.startswith("results/") and not k.startswith("results/points/"))}
    assert changed == set()
    assert not (ROOT / "results" / "points").exists()


@pytest.fixture(scope="module")
def trained(fake_dataset, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config("experiments/points.yaml", tiny_overrides(fake_dataset, runs))
    return fit(cfg, progress=False).run_dir / "best.pt"


def _with_payload(best: Path, dst: Path, marker: Path) -> Path:
    """``best`` with one more entry whose unpickling would run a shell command creating ``marker``."""

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    ckpt = torch.load(best, weights_only=True)
    ckpt["note"] = Payload()
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


def test_a_payload_in_best_pt_is_refused_by_predict_and_never_runs(trained, fake_dataset, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = _with_payload(trained, tmp_path / "shared" / "best.pt", marker)
    image = next(fake_dataset.parent.glob("Tile 1/images/*.jpg"))
    proc = subprocess.run([sys.executable, "-m", "pointseg", "predict", str(evil), "--inputs", str(image),
                           "--output", str(tmp_path / "out"), "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"{evil}: refused" in proc.stderr and "as data, never as code" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists()


def test_a_payload_in_a_teacher_is_refused_and_never_runs(trained, fake_dataset, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = _with_payload(trained, tmp_path / "teacher" / "best.pt", marker)
    cfg = load_config("experiments/points.yaml", [*tiny_overrides(fake_dataset, tmp_path / "runs"),
                                                  f"selftrain.teacher={evil}"])
    with pytest.raises(DataError, match="refused.*as data, never as code"):
        fit(cfg, progress=False)
    assert not marker.exists()


def test_the_plain_checkpoint_still_loads_as_data(trained):
    from pointseg.checkpoint import load_model

    model, cfg, ckpt = load_model(trained)
    assert cfg.points.supervision == "points" and isinstance(ckpt["class_names"], list)
