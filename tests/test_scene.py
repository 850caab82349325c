"""Bring-your-own data (index masks, 4-band uint16, no-data, file-list splits) and whole-scene prediction."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
import torch

from pointseg.config import load_config
from pointseg.data.bands import BandNorm
from pointseg.data.dataset import DatasetSpec, load_scenes
from pointseg.data.raster import DataError, read_bands
from pointseg.infer import predict_probs
from pointseg.scene import SceneInput, predict_scene
from tests.conftest import make_multiband_dataset, tiny_overrides, write_geotiff


@pytest.fixture(scope="module")
def multiband(tmp_path_factory):
    return make_multiband_dataset(tmp_path_factory.mktemp("multiband"))


def test_index_masks_bands_nodata_and_file_lists(multiband):
    spec = DatasetSpec.load(str(multiband))
    assert spec.mask_kind == "index" and spec.num_bands == 4 and [g for g, _ in spec.groups] == ["a", "b", "c"]
    scenes = load_scenes(spec, ["a"], norm=BandNorm.fit(*zip(*[read_bands(i, [1, 2, 3, 4])
                                                                for i, _, g in spec.list_samples() if g == "a"])))
    s = scenes[0]
    assert s.image.dtype == np.uint8 and s.image.shape[2] == 4
    assert (s.full_mask[:, :6] == 255).all()  # the raster's own nodata (0) is ignored in the mask
    assert s.full_mask[0, -1] == 255  # ignore value 9
    assert set(np.unique(s.full_mask)) <= {0, 1, 2, 255}


def test_unknown_mask_value_and_missing_band_are_named(tmp_path):
    yaml_path = make_multiband_dataset(tmp_path)
    write_geotiff(tmp_path / "masks" / "scene_0.tif", np.full((80, 96), 7, np.uint8))
    spec = DatasetSpec.load(str(yaml_path))
    with pytest.raises(DataError, match=r"scene_0\.tif: 1 mask value\(s\) not in the class table: 7 on 7680 px"):
        load_scenes(spec, ["a"], norm=BandNorm((0.0,) * 4, (5000.0,) * 4, "percentile"))
    with pytest.raises(DataError, match=r"scene_1\.tif: has 4 band\(s\); the dataset asks for band\(s\) \[5\]"):
        read_bands(tmp_path / "images" / "scene_1.tif", [1, 5])
    with pytest.raises(DataError, match="uint16 bands need a stretch"):
        load_scenes(spec, ["b"], norm=BandNorm.identity(4))


def _train(multiband, tmp_path, *extra):
    from pointseg.train import fit

    cfg = load_config("experiments/points.yaml", tiny_overrides(multiband, tmp_path / "runs") + [
        "data.train_groups=['a']", "data.val_groups=['b']", "data.test_groups=['c']", "points.n_per_class=5",
        *extra])
    return fit(cfg, progress=False)


def test_multiband_uint16_trains_and_predicts_whole_scenes(multiband, tmp_path, capsys):
    res = _train(multiband, tmp_path)
    ckpt = torch.load(res.run_dir / "best.pt", weights_only=True)
    data = ckpt["data"]
    assert data["in_channels"] == 4 and data["norm"]["method"] == "percentile" and len(data["norm"]["lo"]) == 4
    from pointseg.checkpoint import load_model

    model, cfg, ckpt = load_model(res.run_dir)
    inp = SceneInput.from_checkpoint(ckpt, cfg)
    src = multiband.parent / "images" / "scene_5.tif"
    dst = tmp_path / "pred.tif"
    info = predict_scene([model], src, dst, inp, window=128, batch_size=2, chunk=32, progress=False)
    assert info["blocks"] > 4
    with rasterio.open(dst) as d, rasterio.open(src) as s:
        assert d.crs == s.crs and d.transform == s.transform and (d.height, d.width) == (s.height, s.width)
        labels = d.read(1)
    assert (labels[:, :6] == 255).all() and labels[:, 6:].max() <= 2  # no-data stays no-data
    with rasterio.open(dst) as d:  # the class names reach GIS tools: tags, and a QGIS style beside the map
        tags = d.tags()
        assert tags["CLASS_1"] == "road" and json.loads(tags["CLASS_NAMES"]) == ["background", "road", "roof"]
        assert d.descriptions == ("class",)
    qml = ET.parse(dst.with_suffix(".qml")).getroot()
    entries = qml.findall(".//paletteEntry")
    assert [e.get("label") for e in entries] == ["background", "road", "roof"] and entries[1].get("value") == "1"
    # the stored stretch is the one applied: the same model on the stretched array gives the same classes
    raw, valid = read_bands(src, [1, 2, 3, 4])
    direct = predict_probs(model, inp.norm.to_uint8(raw), 128, 0.25, 2).argmax(0).numpy()
    agree = (direct == labels)[valid].mean()
    assert agree > 0.97, agree
    # predict's default: each haloed block in one pass, no window overlap computed twice
    one_pass = tmp_path / "one-pass.tif"
    predict_scene([model], src, one_pass, inp, window=None, chunk=32, progress=False)
    with rasterio.open(one_pass) as d:
        assert (d.read(1)[valid] == labels[valid]).mean() > 0.97 and (d.read(1)[:, :6] == 255).all()
    # evaluating it on a data set of another class table is refused, naming the checkpoint
    from pointseg.cli import main

    fake = tmp_path / "other.yaml"
    fake.write_text(multiband.read_text().replace("name: roof", "name: tree"))
    assert main(["evaluate", str(res.run_dir), "--dataset", str(fake), "--root", str(multiband.parent)]) == 2
    assert "trained on classes ['background', 'road', 'roof']" in capsys.readouterr().err
    # an output that exists is refused, and nothing is written over it
    with pytest.raises(DataError, match="pred.tif: exists; pass --overwrite"):
        predict_scene([model], src, dst, inp, window=128, chunk=32, progress=False)
    # a raster with fewer bands than the checkpoint reads is an error naming it
    rgb = write_geotiff(tmp_path / "rgb.tif", np.zeros((40, 40, 3), np.uint16))
    with pytest.raises(DataError, match=r"rgb\.tif: has 3 band\(s\)"):
        predict_scene([model], rgb, tmp_path / "rgb_pred.tif", inp, window=128, chunk=32, progress=False)
    assert not (tmp_path / "rgb_pred.tif").exists()


def test_blocks_meet_without_seams(tmp_path):
    """A per-pixel model (1×1 convolution) at working scale 0.5: cutting the scene into blocks with a halo must
    give the classes of one big block (the offsets, halo crops and resizes line up), and the probability raster
    holds one band per class summing to 255."""
    model = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3)[..., None, None] * 20)
        model.bias.zero_()
    rng = np.random.default_rng(0)
    lab = np.kron(rng.integers(0, 3, size=(13, 13)), np.ones((24, 24), int))[:300, :300]
    img = (np.eye(3)[lab] * 200 + rng.integers(0, 50, (300, 300, 3))).astype(np.uint8)
    src = write_geotiff(tmp_path / "scene.tif", img)
    inp = SceneInput(None, None, BandNorm.identity(3), 0.5, [(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    predict_scene([model], src, tmp_path / "one.tif", inp, window=128, chunk=4096, progress=False)
    predict_scene([model], src, tmp_path / "many.tif", inp, window=128, chunk=50, progress=False,
                  probs_path=tmp_path / "many.probs.tif")
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "many.tif") as b:
        one, many = a.read(1), b.read(1)
    assert (one == many).mean() > 0.999
    assert (one == lab).mean() > 0.95  # and the classes are the right ones
    with rasterio.open(tmp_path / "many.probs.tif") as p:
        probs = p.read()
    assert probs.shape == (3, 300, 300) and np.abs(probs.astype(int).sum(0) - 255).max() <= 3


def test_a_scene_of_only_no_data_writes_no_data_and_a_failed_one_leaves_nothing(tmp_path):
    model = torch.nn.Conv2d(3, 2, 1)
    inp = SceneInput(None, [0, 0, 0], BandNorm.identity(3), 1.0, [(0, 0, 0), (255, 0, 0)])
    src = write_geotiff(tmp_path / "empty.tif", np.zeros((40, 40, 3), np.uint8))
    info = predict_scene([model], src, tmp_path / "empty_pred.tif", inp, window=32, chunk=16, progress=False,
                         probs_path=tmp_path / "empty_probs.tif")
    assert info["blocks"] == 0 and info["blocks_skipped"] == 9
    for name in ("empty_pred.tif", "empty_probs.tif"):
        with rasterio.open(tmp_path / name) as d:
            assert d.count == 1 and (d.read(1) == 255).all()
    # a scene that fails at its first block leaves neither map nor temp file (two bands: neither the first three
    # nor one repeated, an error naming the file rather than a broadcast error deep in numpy)
    two = write_geotiff(tmp_path / "two.tif", np.ones((40, 40, 2), np.uint8))
    with pytest.raises(DataError, match=r"two\.tif: has 2 bands; without a band list"):
        predict_scene([model], two, tmp_path / "two_pred.tif", inp, window=32, chunk=16, progress=False,
                      probs_path=tmp_path / "two_probs.tif")
    assert sorted(p.name for p in tmp_path.iterdir() if "two" in p.name) == ["two.tif"]
    # a colour table the raster refuses (four channels where three are expected): the temporary map goes too
    bad = SceneInput(None, [0, 0, 0], BandNorm.identity(3), 1.0, [(0, 0, 0, 0), (255, 0, 0, 0)])
    with pytest.raises(ValueError):
        predict_scene([model], src, tmp_path / "bad_pred.tif", bad, window=32, chunk=16, progress=False)
    assert not [p.name for p in tmp_path.iterdir() if "bad" in p.name]
    # image no-data with a value count that fits neither one value nor one per band: named, not a numpy error
    with pytest.raises(DataError, match=r"empty\.tif: image no-data \[0, 0\] has 2 values for 3 band"):
        read_bands(src, None, [0, 0])


@pytest.mark.parametrize("size, inner", [((64, 96), (slice(8, 40), slice(16, 80))),
                                         ((64, 96), (slice(0, 64), slice(0, 96))),
                                         ((96, 96), (slice(30, 66), slice(0, 50))),
                                         ((64, 96), (slice(1, 63), slice(3, 95)))])
def test_resizing_only_the_inner_block_gives_the_values_of_resizing_all_of_it(size, inner):
    import torch.nn.functional as F

    from pointseg.scene import upsample_inner

    torch.manual_seed(0)
    for step in (2, 3):
        probs = torch.rand(5, size[0] // 2 * 2 // step or 1, size[1] // step)
        full_size = (probs.shape[1] * step, probs.shape[2] * step)
        rows = slice(min(inner[0].start, full_size[0] - 1), min(inner[0].stop, full_size[0]))
        cols = slice(min(inner[1].start, full_size[1] - 1), min(inner[1].stop, full_size[1]))
        whole = F.interpolate(probs[None], size=full_size, mode="bilinear", align_corners=False)[0][:, rows, cols]
        got = upsample_inner(probs, full_size, (rows, cols))
        # the same bilinear weights; the coordinates are computed from the factor instead of the size, which may
        # round the last float bit differently: no predicted class changes
        assert got.shape == whole.shape and torch.allclose(got, whole, rtol=0, atol=2e-6)
        assert torch.equal(got.argmax(0), whole.argmax(0))


def test_the_halo_and_the_weights_layout_that_predict_runs_with(tmp_path):
    """One pass per block: ONE_PASS_HALO working-scale pixels of context (a sliding window keeps a quarter of the
    window), on the working-scale grid; a loaded model holds channels_last weights like its inputs (oneDNN then
    reorders nothing per call: 11.3 → 8.3 s on a 16 Mpx scene, no pixel changed)."""
    from pointseg.checkpoint import load_model
    from pointseg.models import build_model
    from pointseg.scene import ONE_PASS_HALO, _grid

    half = SceneInput(None, None, BandNorm.from_state(None, 3), 0.5, [])
    assert _grid(half, None, 2048, None) == (2048, 2 * ONE_PASS_HALO)
    assert _grid(half, 512, 2048, None) == (2048, 256)
    assert _grid(half, None, 2047, 33) == (2048, 34)  # rounded up to even full-resolution pixels
    cfg = load_config("experiments/points.yaml")
    model = build_model(cfg.model.arch, cfg.model.encoder, 2, "none", cfg.model.decoder_channels)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 2, "epoch": 0,
                "class_names": ["a", "b"], "style": None}, tmp_path / "best.pt")
    loaded, _, _ = load_model(tmp_path / "best.pt")
    convs = [m.weight for m in loaded.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)


def test_folded_batch_norm_gives_the_same_probabilities_and_is_refused_when_it_would_not():
    """Every batch norm of the default Unet folds into the convolution before it, with the same output; a norm
    whose convolution also feeds something else is caught by the output check and the original model kept."""
    from torch import nn

    from pointseg.fuse import fold_batchnorm
    from pointseg.models import build_model

    torch.manual_seed(0)
    cfg = load_config("experiments/points.yaml")
    model = build_model(cfg.model.arch, cfg.model.encoder, 5, "none", cfg.model.decoder_channels).eval()
    for m in model.modules():  # statistics other than the fresh 0/1, so that folding has something to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 3, 64, 96)
    folded = fold_batchnorm(model, x[:1])
    assert folded is not model and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        assert torch.allclose(model(x), folded(x), atol=1e-4)

    class Branching(nn.Module):  # the convolution's output goes to the norm and, unnormalised, to the sum
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(0.5)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y
    odd = Branching().eval()
    assert fold_batchnorm(odd, x) is odd
