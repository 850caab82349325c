import shutil

import numpy as np
import pytest
import rasterio

from pointseg.data.dataset import DatasetSpec, load_scenes, resize_nearest
from pointseg.data.raster import DataError, decode_mask, read_image
from tests.conftest import COLORS, IGNORE_COLORS, REAL_DATA, make_dataset, requires_real_data


def test_reads_jpeg_geotiff_and_palette_masks(fake_dataset):
    spec = DatasetSpec.load(str(fake_dataset))
    scenes = load_scenes(spec, ["1", "3"], scale=0.5)
    assert len(scenes) == 4
    s = scenes[-1]
    assert s.image_path.suffix == ".tif" and s.image.shape[:2] == s.mask.shape
    assert s.full_mask.shape == (2 * s.mask.shape[0], 2 * s.mask.shape[1])
    assert set(np.unique(s.full_mask)) <= {0, 1, 2, 3, 4, 255}
    palette_scene = scenes[1]  # part 2 = palette PNG
    assert (palette_scene.full_mask != 255).mean() > 0.9


def test_unknown_colour_is_an_error_naming_file_and_colour(tmp_path):
    path = tmp_path / "m.png"
    arr = np.zeros((3, 4, 4), np.uint8)
    arr[:, 0, 0] = (1, 2, 3)
    with rasterio.open(path, "w", driver="PNG", height=4, width=4, count=3, dtype="uint8") as d:
        d.write(arr)
    with pytest.raises(DataError, match=r"m\.png.*\(1,2,3\) on 1 px"):
        decode_mask(path, COLORS, IGNORE_COLORS)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="bad.jpg"):
        read_image(bad)
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "none.jpg")


def test_missing_data_folder_says_make_data(tmp_path):
    spec = DatasetSpec.load("dubai-aerial")
    with pytest.raises(DataError, match="make data"):
        spec.list_samples(tmp_path / "nowhere")


def test_image_without_mask(tmp_path):
    yaml_path = make_dataset(tmp_path, tiles=1, parts=1)
    (tmp_path / "Tile 1" / "masks" / "image_part_001.png").unlink()
    with pytest.raises(DataError, match="image_part_001.jpg: its mask .* is missing"):
        DatasetSpec.load(str(yaml_path)).list_samples()


def test_mask_size_mismatch(tmp_path):
    yaml_path = make_dataset(tmp_path, tiles=1, parts=2)
    masks = tmp_path / "Tile 1" / "masks"
    shutil.copy(masks / "image_part_002.png", masks / "image_part_001.png")  # same tile, other size? force one
    with rasterio.open(masks / "image_part_001.png") as s:
        arr = s.read()
    with rasterio.open(masks / "image_part_001.png", "w", driver="PNG", height=10, width=10, count=arr.shape[0],
                       dtype="uint8") as d:
        d.write(arr[:, :10, :10])
        if arr.shape[0] == 1:
            d.write_colormap(1, {i: tuple(c) + (255,) for i, c in enumerate(COLORS + IGNORE_COLORS)})
    with pytest.raises(DataError, match="image_part_001.png: mask is 10×10 px but its image"):
        load_scenes(DatasetSpec.load(str(yaml_path)), ["1"])


def test_image_nodata_of_the_wrong_length_is_refused_when_the_data_set_loads(tmp_path, fake_dataset):
    import yaml

    raw = yaml.safe_load(fake_dataset.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**raw, "image_nodata": [255, 255]}))
    with pytest.raises(DataError, match=r"bad\.yaml: image_nodata \[255, 255\] has 2 values for 3 band"):
        DatasetSpec.load(str(bad))
    bad.write_text(yaml.safe_dump({**raw, "image_nodata": 255, "bands": [1, 2]}))
    assert DatasetSpec.load(str(bad)).image_nodata == (255.0,)  # one value serves every band


def test_unknown_split_group(fake_dataset):
    with pytest.raises(DataError, match=r"group\(s\) \['9'\]"):
        load_scenes(DatasetSpec.load(str(fake_dataset)), ["9"])


def test_resize_nearest_never_invents_labels():
    m = np.random.default_rng(0).integers(0, 3, (37, 41))
    small = resize_nearest(m, (18, 20))
    assert set(np.unique(small)) <= set(np.unique(m))


@requires_real_data
def test_every_real_mask_decodes_with_the_source_table():
    """The table in SOURCE.md (not classes.json) covers every pixel of all 72 masks, RGB and palette."""
    spec = DatasetSpec.load("dubai-aerial")
    samples = spec.list_samples(REAL_DATA)
    assert len(samples) == 72 and len({g for _, _, g in samples}) == 8
    counts = np.zeros(256, np.int64)
    for _, mask, _ in samples:
        counts += np.bincount(decode_mask(mask, list(spec.class_colors), list(spec.ignore_colors)).ravel(),
                              minlength=256)
    share = counts[:5] / counts.sum()
    assert counts.sum() == 99_032_243
    assert share[1] == pytest.approx(0.524, abs=0.002)  # Land (unpaved), 52.4 % in SOURCE.md


ROADS = REAL_DATA.parent / "massachusetts-roads-sample"


@pytest.mark.skipif(not (ROADS / "images").is_dir(), reason="roads sample not under data/ (make data links it)")
def test_roads_sample_reads_through_its_dataset_yaml_alone():
    """The second data set (binary 0/255 masks, white no-data, a file-list split): every mask decodes through the
    value table, the split is 20/5/5, and white borders are ignored, not learned as background."""
    spec = DatasetSpec.load("massachusetts-roads")
    samples = spec.list_samples(ROADS)
    assert [sum(g == s for *_, g in samples) for s in ("train", "val", "test")] == [20, 5, 5]
    for _, mask, _ in samples:
        assert set(np.unique(spec.decode_mask(mask))) <= {0, 1}
    scene = load_scenes(spec, ["val"], root=ROADS)[0]
    white = (scene.image == 255).all(axis=2)
    assert white.any() and (scene.full_mask[white] == 255).all()
