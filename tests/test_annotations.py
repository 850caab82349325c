"""Real clicked points from GeoJSON and CSV: reprojection, pixel placement, statuses, errors, training."""

import csv
import json

import numpy as np
import pytest
from rasterio.warp import transform as reproject

from pointseg.annotations import place, read_clicks, write_geojson
from pointseg.config import load_config
from pointseg.data.bands import BandNorm
from pointseg.data.dataset import DatasetSpec, load_scenes
from pointseg.data.raster import DataError
from tests.conftest import GEO_CRS, GEO_ORIGIN, make_multiband_dataset, tiny_overrides

NAMES = ["background", "road", "roof"]
NORM = BandNorm((0.0,) * 4, (5000.0,) * 4, "percentile")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("clicks")
    spec = DatasetSpec.load(str(make_multiband_dataset(root)))
    return root, {g: load_scenes(spec, [g], norm=NORM) for g in ("a", "b", "c")}


def _map_xy(row, col, res=0.5):
    """Map coordinates (UTM 40N) of a full-resolution pixel centre of the test scenes."""
    return GEO_ORIGIN[0] + (col + 0.5) * res, GEO_ORIGIN[1] - (row + 0.5) * res


def _geojson(path, points, crs=GEO_CRS):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(xy)}, "properties": {"class": c}}
        for xy, c in points]}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def test_map_points_land_on_their_pixel_in_utm_and_in_lonlat(data, tmp_path):
    root, splits = data
    # every test scene covers the same ground, so a point lands on the first scene of the split order (a)
    utm = _geojson(tmp_path / "utm.geojson", [(_map_xy(10, 20), "road"), (_map_xy(40, 70), 2)])
    maps, rows, counts = place(read_clicks(utm, NAMES), {"train": splits["a"]}, utm)
    assert counts == {"train": 2}
    assert maps["train"][0][10, 20] == 1 and maps["train"][0][40, 70] == 2
    lon, lat = reproject(GEO_CRS, "EPSG:4326", [_map_xy(30, 50)[0]], [_map_xy(30, 50)[1]])
    ll = _geojson(tmp_path / "ll.geojson", [((lon[0], lat[0]), "roof")], crs=None)  # RFC 7946: lon/lat
    maps, rows, counts = place(read_clicks(ll, NAMES), {"train": splits["a"]}, ll)
    assert maps["train"][0][30, 50] == 2 and rows[0]["row"] == 30 and rows[0]["col"] == 50


def test_outside_nodata_and_duplicates_are_counted_not_dropped(data, tmp_path):
    root, splits = data
    f = _geojson(tmp_path / "p.geojson", [(_map_xy(10, 20), "road"), (_map_xy(10, 20), "roof"),
                                          (_map_xy(5, 2), "road"), (_map_xy(-50, 20), "road")])
    maps, rows, counts = place(read_clicks(f, NAMES), {"train": splits["a"]}, f)
    assert counts == {"train": 1, "duplicate": 1, "nodata": 1, "outside": 1}
    assert [r["status"] for r in rows] == ["train", "duplicate", "nodata", "outside"]


def test_csv_pixels_and_map_coordinates(data, tmp_path):
    root, splits = data
    px = tmp_path / "px.csv"
    px.write_text("image,row,col,class\nscene_1.tif,12,30,roof\nimages/scene_3.tif,7,40,0\n")
    maps, rows, counts = place(read_clicks(px, NAMES), {"train": splits["a"], "val": splits["b"]}, px)
    assert maps["train"][1][12, 30] == 2 and maps["val"][0][7, 40] == 0 and counts == {"train": 1, "val": 1}
    xy = tmp_path / "xy.csv"
    x, y = _map_xy(8, 9)
    xy.write_text(f"x,y,class\n{x},{y},road\n")
    with pytest.raises(DataError, match=r"xy\.csv: x,y columns need the CRS.*points\.crs"):
        read_clicks(xy, NAMES)
    maps, _, _ = place(read_clicks(xy, NAMES, crs=GEO_CRS), {"train": splits["a"]}, xy)
    assert maps["train"][0][8, 9] == 1


def test_bad_point_files_are_clear_errors(data, tmp_path):
    root, splits = data
    with pytest.raises(DataError, match=r"bad\.geojson: feature 0: unknown class 'river'; classes are"):
        read_clicks(_geojson(tmp_path / "bad.geojson", [(_map_xy(1, 1), "river")]), NAMES)
    # UTM metres in a file without a crs member cannot be lon/lat
    with pytest.raises(DataError, match=r"nocrs\.geojson: has no crs member.*\(300010\.25"):
        read_clicks(_geojson(tmp_path / "nocrs.geojson", [(_map_xy(1, 20), "road")], crs=None), NAMES)
    out = tmp_path / "out.csv"
    out.write_text("image,row,col,class\nscene_0.tif,500,3,road\n")
    with pytest.raises(DataError, match=r"out\.csv: click 0 at row 500.0, col 3.0 is outside scene_0\.tif"):
        place(read_clicks(out, NAMES), {"train": splits["a"]}, out)
    with pytest.raises(DataError, match="points file not found"):
        read_clicks(tmp_path / "none.geojson", NAMES)
    nope = tmp_path / "nope.csv"
    nope.write_text("image,row,col,class\nnope.tif,1,1,road\n")
    with pytest.raises(DataError, match=r"nope\.csv: click 0 names image 'nope\.tif', which is not in the data set"):
        place(read_clicks(nope, NAMES), {"train": splits["a"]}, nope)


def test_map_clicks_on_images_without_georeference_are_refused(tmp_path):
    from types import SimpleNamespace

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    plain = tmp_path / "plain.tif"
    with pytest.warns(NotGeoreferencedWarning), rasterio.open(plain, "w", driver="GTiff", height=8, width=8,
                                                                count=3, dtype="uint8") as d:
        d.write(np.zeros((3, 8, 8), np.uint8))
    scene = SimpleNamespace(name="plain.tif", image_path=plain, mask=np.zeros((8, 8), np.uint8), valid=None)
    xy = _geojson(tmp_path / "xy.geojson", [(_map_xy(1, 1), "road")])
    with pytest.raises(DataError, match=r"xy\.geojson: its points are in map coordinates, but no image"):
        place(read_clicks(xy, NAMES), {"train": [scene]}, xy)


def test_exported_simulated_points_read_back_to_the_same_pixels(data, tmp_path):
    root, splits = data
    scene = splits["a"][0]
    pts = np.full(scene.mask.shape, 255, np.int64)
    pts[[15, 33, 60], [40, 10, 80]] = [0, 1, 2]
    n = write_geojson(tmp_path / "sim.geojson", pts, NAMES, scene.image_path)
    assert n == 3 and json.loads((tmp_path / "sim.geojson").read_text())["crs"]["properties"]["name"] == GEO_CRS
    maps, _, counts = place(read_clicks(tmp_path / "sim.geojson", NAMES), {"train": splits["a"]}, "sim")
    assert counts == {"train": 3} and (maps["train"][0] == pts).all()


def test_training_from_a_points_file(tmp_path):
    from pointseg.train import fit

    yaml_path = make_multiband_dataset(tmp_path / "d")
    clicks = ((20, 30, 0), (50, 60, 1), (70, 90, 2))
    rows = [f"images/scene_{i}.tif,{r},{c},{k}" for i in range(3) for r, c, k in clicks]
    f = tmp_path / "clicks.csv"
    f.write_text("image,row,col,class\n" + "\n".join(rows) + "\nimages/scene_0.tif,3,2,road\n")
    cfg = load_config("experiments/points.yaml", tiny_overrides(yaml_path, tmp_path / "runs") + [
        "data.train_groups=['a']", "data.val_groups=['b']", "data.test_groups=['c']",
        "points.source=file", f"points.file={f}"])
    res = fit(cfg, progress=False)
    info = json.loads((res.run_dir / "points.json").read_text())
    assert info["source"] == "file" and info["status"] == {"train": 9, "nodata": 1} and info["points_total"] == 9
    with open(res.run_dir / "points.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 10 and table[-1]["status"] == "nodata"
    assert np.isfinite(res.final["test/miou"])
