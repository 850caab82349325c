"""What a user met on their own scenes: any mask suffix or one clear error, previews that respect no-data,
training images without a click named in the log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pointseg.config import load_config
from pointseg.data.dataset import DatasetSpec
from pointseg.data.raster import DataError
from tests.conftest import ROOT, make_multiband_dataset, tiny_overrides, write_geotiff


def test_a_mask_suffix_with_more_than_an_extension_names_the_mask(tmp_path):
    yaml_path = make_multiband_dataset(tmp_path / "d")
    for mask in (tmp_path / "d" / "masks").glob("*.tif"):
        mask.rename(mask.with_name(mask.stem + "_roads.tif"))  # masks/scene_0_roads.tif, the README's form
    desc = yaml.safe_load(yaml_path.read_text())
    yaml_path.write_text(yaml.safe_dump({**desc, "mask_suffix": "_roads.tif"}))
    spec = DatasetSpec.load(str(yaml_path))
    image = tmp_path / "d" / "images" / "scene_0.tif"
    assert spec.mask_path(image) == tmp_path / "d" / "masks" / "scene_0_roads.tif"
    assert spec.decode_mask(spec.mask_path(image)).shape == (80, 96)
    for bad in ("", "masks/x.tif", 3):
        yaml_path.write_text(yaml.safe_dump({**desc, "mask_suffix": bad}))
        with pytest.raises(DataError, match=r"multiband\.yaml: mask_suffix .* must be the text that replaces"):
            DatasetSpec.load(str(yaml_path))


def test_preview_clicks_never_land_on_the_images_no_data(tmp_path):
    yaml_path = make_multiband_dataset(tmp_path / "d")
    image = tmp_path / "d" / "images" / "scene_0.tif"
    # a mask that labels the no-data border too (as 0/1 masks of a user's scenes did)
    mask = write_geotiff(tmp_path / "full-mask.tif", np.ones((80, 96), np.uint8))
    out = tmp_path / "clicks.geojson"
    proc = subprocess.run([sys.executable, "-m", "pointseg", "points", str(mask), "--dataset", str(yaml_path),
                           "--n-per-class", "40", "--strategy", "uniform", "--geojson", str(out), "--like", str(image)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    feats = json.loads(out.read_text())["features"]
    assert feats
    xs = [f["geometry"]["coordinates"][0] for f in feats]
    assert min(xs) > 300000 + 6 * 0.5  # the first 6 columns (0.5 m each) are no-data: no click there


def test_training_images_without_a_click_are_named_in_the_log(tmp_path, caplog):
    from pointseg.train import fit

    yaml_path = make_multiband_dataset(tmp_path / "d")
    rows = [f"images/scene_0.tif,{r},{c},{k}" for r, c, k in ((20, 30, 0), (50, 60, 1), (70, 90, 2))]
    f = tmp_path / "clicks.csv"
    f.write_text("image,row,col,class\n" + "\n".join(rows) + "\n")
    cfg = load_config("experiments/points.yaml", tiny_overrides(yaml_path, tmp_path / "runs") + [
        "data.train_groups=['a']", "data.val_groups=['b']", "data.test_groups=['c']",
        "points.source=file", f"points.file={f}"])
    with caplog.at_level(logging.WARNING):
        res = fit(cfg, progress=False)
    said = [r.getMessage() for r in caplog.records if "have no click" in r.getMessage()]
    assert said and "2 of 3 training images have no click" in said[0] and "scene_1.tif" in said[0]
    info = json.loads((res.run_dir / "points.json").read_text())
    assert len(info["images_without_points"]) == 2 and not any("scene_0" in n for n in info["images_without_points"])


class _Terminal:
    """A stderr that says it is a terminal, recording what is written."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_an_error_never_shares_a_line_with_a_progress_bar(monkeypatch):
    from pointseg import progress

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    b = progress.bar(range(10), desc="epoch 1/8", file=term, mininterval=0)
    next(iter(b))
    b.update(3)
    progress.say_error("data/x.tif: cannot read")
    b.close()
    lines = term.text.split("\n")
    shown = [ln.rsplit("\r", 1)[-1] for ln in lines]  # what a terminal shows of each line
    assert "error: data/x.tif: cannot read" in shown


def test_log_lines_go_to_the_stderr_of_the_moment_not_a_closed_one(monkeypatch):
    """The handler once kept the stderr it was set up with: a later caller (a test's capture, a redirection) found it
    closed and logging printed "I/O operation on closed file" tracebacks instead of the line."""
    import io
    import logging

    from pointseg import progress

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        progress.setup_logging()
        first.close()
        now = io.StringIO()
        monkeypatch.setattr(sys, "stderr", now)
        monkeypatch.setattr(logging, "raiseExceptions", True)
        logging.getLogger("pointseg.test").info("after the first stderr closed")
        assert "INFO pointseg.test: after the first stderr closed" in now.getvalue()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_log_written_to_a_file_has_no_progress_redraws(fake_dataset, tmp_path):
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "pointseg", "train", "--config", "experiments/points.yaml",
                               *[o for o in tiny_overrides(fake_dataset, tmp_path / "runs")]],
                              cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text and "epoch 2: loss" in text and "test mIoU" in text


def test_predict_and_evaluate_take_a_thread_count(tmp_path):
    import torch

    from pointseg.cli import main

    try:
        for cmd in (["evaluate", str(tmp_path / "none")], ["predict", str(tmp_path / "none"), "--inputs", "x.tif",
                                                           "--output", str(tmp_path / "o")]):
            torch.set_num_threads(1)
            assert main([*cmd, "--threads", "2"]) == 2  # the checkpoint is missing: a clear error, after the setting
            assert torch.get_num_threads() == 2
        assert main(["evaluate", str(tmp_path / "none"), "--threads", "0"]) == 2
    finally:
        torch.set_num_threads(1)


def test_predict_takes_folders_and_patterns_of_scenes(tmp_path):
    from pointseg.cli import expand_inputs

    for name in ("b.tif", "a.tif", "c.jpg", "notes.txt"):
        (tmp_path / "scenes" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "scenes" / name).write_bytes(b"x")
    d = tmp_path / "scenes"
    assert expand_inputs([str(d)]) == [d / "a.tif", d / "b.tif", d / "c.jpg"]
    assert expand_inputs([str(d / "*.tif"), str(d / "a.tif")]) == [d / "a.tif", d / "b.tif"]
    with pytest.raises(DataError, match=r"nothing/\*\.tif: no scene there"):
        expand_inputs([str(tmp_path / "nothing" / "*.tif")])


def test_the_readmes_layout_names_every_module():
    import re

    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("## Results")]
    named = set(re.findall(r"([\w]+\.py)", layout))
    for folder in ("pointseg", "pointseg/data", "pointseg/unlabelled", "pointseg/bench", "analysis", "sweeps"):
        for f in (ROOT / folder).glob("*.py"):
            if f.name != "__init__.py":
                assert f.name in named, f"{folder}/{f.name} is missing from the README's layout section"


def test_analysis_only_reads_it_imports_neither_torch_nor_the_trainer():
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, analysis\n"
            "for m in pkgutil.iter_modules(analysis.__path__): importlib.import_module('analysis.' + m.name)\n"
            "print([k for k in ('torch', 'pointseg.train', 'pointseg.infer', 'pointseg.checkpoint') "
            "if k in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
