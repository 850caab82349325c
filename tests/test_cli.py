"""End to end through the command line a user types."""

import json
import subprocess
import sys

import pytest
import rasterio

from tests.conftest import tiny_overrides

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pointseg", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_train_evaluate_predict(fake_dataset, tmp_path):
    run = tmp_path / "run"
    r = _cli("train", "--config", "experiments/points.yaml", "--run-dir", str(run), "--no-wandb",
             *tiny_overrides(fake_dataset, tmp_path))
    assert r.returncode == 0, r.stderr
    assert "test mIoU" in r.stdout
    r = _cli("train", "--config", "experiments/points.yaml", "--run-dir", str(run), "--no-wandb",
             *tiny_overrides(fake_dataset, tmp_path), "loss.gamma=0")
    assert r.returncode == 1 and "another config (loss.gamma" in r.stderr and "Traceback" not in r.stderr
    # one round of self-training from that run, as the README shows it; a missing teacher is one clear line
    r = _cli("train", "--config", "experiments/points.yaml", "--no-wandb", *tiny_overrides(fake_dataset, tmp_path),
             "name=student", f"selftrain.teacher={run}", "selftrain.threshold=0.5")
    assert r.returncode == 0 and "pseudo-labels on" in r.stderr, r.stderr
    r = _cli("train", "--config", "experiments/points.yaml", "--no-wandb", *tiny_overrides(fake_dataset, tmp_path),
             "name=orphan", f"selftrain.teacher={tmp_path}/no-teacher/seed{{seed}}")
    assert r.returncode == 2 and "no-teacher/seed0/best.pt not found" in r.stderr and "Traceback" not in r.stderr
    r = _cli("evaluate", str(run), str(run), "--split", "val", "--output", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert '"val/miou"' in r.stdout and (tmp_path / "m.json").exists()
    # one test tile, recomputed from best.pt, equals the run's own per-tile number
    r = _cli("evaluate", str(run), "--split", "test", "--groups", "3", "--output", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    final = json.loads((run / "final.json").read_text())
    assert json.loads((tmp_path / "t.json").read_text())["test/miou"] == pytest.approx(final["test/group/3/miou"])
    image = fake_dataset.parent / "Tile 3" / "images" / "image_part_001.tif"
    r = _cli("predict", str(run), "--inputs", str(image), "--output", str(tmp_path / "pred"), "--tta", "--probs")
    assert r.returncode == 0, r.stderr
    assert "ERROR" not in r.stderr  # no stray GDAL error line on a clean run
    with rasterio.open(tmp_path / "pred" / "image_part_001.tif") as d, rasterio.open(image) as s:
        assert (d.height, d.width) == (s.height, s.width) and d.crs == s.crs and d.transform == s.transform
        assert d.read(1).max() < 5
    with rasterio.open(tmp_path / "pred" / "image_part_001.probs.tif") as p:
        assert p.count == 5
    r = _cli("predict", str(run), "--inputs", str(image), "--output", str(tmp_path / "pred"))
    assert r.returncode == 2 and "exists; pass --overwrite" in r.stderr and "Traceback" not in r.stderr


def test_bad_key_is_one_clear_error():
    r = _cli("train", "--config", "experiments/points.yaml", "train.epoch=3")
    assert r.returncode == 2
    assert "unknown config key 'train.epoch'" in r.stderr and "Traceback" not in r.stderr


def test_missing_data_folder_is_one_clear_error(tmp_path):
    r = _cli("train", "--no-wandb", f"data.root={tmp_path / 'nothing'}", f"out_dir={tmp_path / 'runs'}")
    assert r.returncode == 2 and "make data" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # no half-made run directory


def test_points_command_prints_the_clicks(fake_dataset):
    mask = fake_dataset.parent / "Tile 1" / "masks" / "image_part_001.png"
    r = _cli("points", str(mask), "--dataset", str(fake_dataset), "--n-per-class", "2", "--seed", "3")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()
    assert rows[0] == "row,col,class" and 2 <= len(rows) - 1 <= 10  # up to 2 per class present, 5 classes
    assert r.stdout == _cli("points", str(mask), "--dataset", str(fake_dataset), "--n-per-class", "2",
                            "--seed", "3").stdout  # same seed, same clicks
    image = fake_dataset.parent / "Tile 3" / "images" / "image_part_001.tif"  # georeferenced
    mask3 = fake_dataset.parent / "Tile 3" / "masks" / "image_part_001.png"
    r = _cli("points", str(mask3), "--dataset", str(fake_dataset), "--n-per-class", "2", "--geojson",
             str(mask.parent.parent.parent / "clicks.geojson"), "--like", str(image))
    assert r.returncode == 0, r.stderr
    doc = json.loads((mask.parent.parent.parent / "clicks.geojson").read_text())
    assert doc["crs"]["properties"]["name"] == "EPSG:32640" and doc["features"][0]["geometry"]["type"] == "Point"
