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
