"""Shared fixtures: a tiny generated data set laid out like Dubai (tiles of parts; JPEG/PNG/GeoTIFF; RGB and
palette masks; ignore colours), and a config shrunk to a few CPU steps."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from pointseg.config import load_config

os.environ.setdefault("WANDB_SILENT", "true")
# Tiny tensors gain nothing from a second thread, and OpenMP threads spinning against another busy process
# made a tiny fit 50× slower here: tests (and the subprocesses they start) use one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT / "data" / "dubai-aerial"
COLORS = [(60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41)]
IGNORE_COLORS = [(0, 0, 0), (155, 155, 155)]


def _write(path: Path, arr: np.ndarray, driver: str, geo: bool = False, palette: dict | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 1 if arr.ndim == 2 else arr.shape[2]
    profile = dict(driver=driver, height=arr.shape[0], width=arr.shape[1], count=count, dtype="uint8")
    if geo:
        profile.update(crs="EPSG:32640", transform=from_origin(300000, 2800000, 0.5, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr if arr.ndim == 2 else arr.transpose(2, 0, 1), *([1] if arr.ndim == 2 else []))
            if palette:
                dst.write_colormap(1, palette)


def make_label_map(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blocky class regions (so `interior` has interiors) with a few ignored pixels."""
    coarse = rng.integers(0, 5, size=(h // 16 + 1, w // 16 + 1))
    lab = np.kron(coarse, np.ones((16, 16), int))[:h, :w]
    lab[:3, :3] = 5  # black gap
    lab[-2:, -2:] = 6  # grey "Unlabeled"
    return lab


def make_dataset(root: Path, tiles: int = 3, parts: int = 2, size=(72, 88), seed: int = 0) -> Path:
    """Write the fake data set and its description YAML; returns the YAML path."""
    rng = np.random.default_rng(seed)
    lut = np.array(COLORS + IGNORE_COLORS, np.uint8)
    for t in range(1, tiles + 1):
        for p in range(1, parts + 1):
            h, w = size[0] + 8 * t, size[1]
            lab = make_label_map(rng, h, w)
            # the image is a noisy function of the class, so a network can learn something
            img = np.clip(lut[lab].astype(int) // 2 + rng.integers(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
            stem = f"image_part_{p:03d}"
            if t == 3:  # a georeferenced GeoTIFF tile
                _write(root / f"Tile {t}" / "images" / f"{stem}.tif", img, "GTiff", geo=True)
            else:
                _write(root / f"Tile {t}" / "images" / f"{stem}.jpg", img, "JPEG")
            if p == 2:  # a palette mask, as 18 of the real ones are
                pal = {i: tuple(int(v) for v in c) + (255,) for i, c in enumerate(lut)}
                _write(root / f"Tile {t}" / "masks" / f"{stem}.png", lab.astype(np.uint8), "PNG", palette=pal)
            else:
                _write(root / f"Tile {t}" / "masks" / f"{stem}.png", lut[lab], "PNG")
    desc = {
        "name": "fake", "root": str(root), "images": "Tile */images/*.*",
        "mask_dir": {"from": "images", "to": "masks"}, "mask_suffix": ".png", "group_pattern": r"Tile (\d+)",
        "classes": [{"name": n, "color": list(c)} for n, c in zip("BLRVW", COLORS)],
        "ignore_colors": [list(c) for c in IGNORE_COLORS],
    }
    path = root / "fake.yaml"
    path.write_text(yaml.safe_dump(desc))
    return path


@pytest.fixture(scope="session")
def fake_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("fake-data"))


def tiny_overrides(dataset_yaml: Path, out_dir: Path) -> list[str]:
    """Any config shrunk to a few steps on the fake data set (lightning-hydra-template's trick)."""
    return [
        f"data.dataset={dataset_yaml}", f"data.root={dataset_yaml.parent}", "data.scale=1.0",
        "data.train_groups=['1']", "data.val_groups=['2']", "data.test_groups=['3']",
        "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=2", "train.crop_size=64",
        "train.warmup_steps=1", "train.threads=1", "eval.window=128", "eval.batch_size=2",
        "model.decoder_channels=[32,16,16,8,8]", "wandb.mode=disabled", f"out_dir={out_dir}",
        f"export_dir={out_dir.parent / 'results'}",
    ]


@pytest.fixture
def tiny_config(fake_dataset, tmp_path):
    def make(path=None, extra=()):
        return load_config(path, tiny_overrides(fake_dataset, tmp_path / "runs") + list(extra))
    return make


requires_real_data = pytest.mark.skipif(not (REAL_DATA / "Tile 1").is_dir(),
                                        reason="real Dubai data not under data/ (run `make data`)")


GEO_CRS = "EPSG:32640"  # UTM 40N (Dubai): a real projected CRS
GEO_ORIGIN = (300000.0, 2800000.0)


def write_geotiff(path: Path, arr: np.ndarray, nodata=None, res: float = 0.5, origin=GEO_ORIGIN) -> Path:
    """An H×W×C (or H×W) array as a georeferenced GeoTIFF in UTM 40N."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = arr[..., None] if arr.ndim == 2 else arr
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=arr.shape[2],
                       dtype=arr.dtype, crs=GEO_CRS, transform=from_origin(*origin, res, res), nodata=nodata) as d:
        d.write(arr.transpose(2, 0, 1))
    return path


def make_multiband_dataset(root: Path, n: int = 6, size=(80, 96), seed: int = 0) -> Path:
    """4-band uint16 GeoTIFFs (values in the thousands, like a 12-bit sensor) with index masks (0 = background,
    1 = road, 2 = roof; 9 = unlabelled) and a no-data border (all bands 0, the raster's own nodata). Split by file
    lists. Returns the dataset YAML."""
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        lab = np.kron(rng.integers(0, 3, size=(size[0] // 16 + 1, size[1] // 16 + 1)), np.ones((16, 16), int))
        lab = lab[:size[0], :size[1]]
        img = (1000 + 900 * lab[..., None] * np.array([1, 2, 3, 1])[None, None] + rng.integers(0, 400, size + (4,)))
        img = img.astype(np.uint16)
        img[:, :6] = 0  # no-data border
        mask = lab.astype(np.uint8)
        mask[:2, -2:] = 9
        name = f"scene_{i}.tif"
        write_geotiff(root / "images" / name, img, nodata=0)
        write_geotiff(root / "masks" / name, mask)
        names.append(f"images/{name}")
    desc = {
        "name": "multiband", "root": ".", "images": "images/*.tif", "mask_suffix": ".tif",
        "classes": [{"name": "background", "value": 0}, {"name": "road", "value": 1}, {"name": "roof", "value": 2}],
        "ignore_values": [9], "bands": [1, 2, 3, 4], "normalize": {"method": "percentile", "low": 1, "high": 99},
        "groups": {"a": names[:3], "b": names[3:5], "c": names[5:]},
    }
    path = root / "multiband.yaml"
    path.write_text(yaml.safe_dump(desc))
    return path


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("pg_ctl")
    return Path(exe).parent if exe else None


@pytest.fixture
def postgres(tmp_path):
    """A throwaway PostgreSQL server on a free port (skips, saying why, when none can be started)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl); .ci/run installs Debian's postgresql")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pointseg-pg-"))  # pytest's tmp dirs are 0700: postgres could not enter
    data = base / "data"
    data.mkdir()
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        os.chmod(base, 0o755)
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"initdb failed: {r.stderr.strip()[:200]}")
    r = subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                                  f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"PostgreSQL did not start: {r.stderr.strip()[:200]}")
    try:
        subprocess.run(as_user + [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                  "optuna"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def search_file(flat: dict) -> dict:
    """A search written flat (name, base_config, space, sampler, …) as a study file: the study's keys on top, the
    search's under ``search:``."""
    top = {"name": flat["name"], "question": flat.get("question", "Which setting is best?"),
           "hypothesis": flat.get("hypothesis", "The first."), "base": flat["base_config"],
           "overrides": list(flat.get("overrides") or [])}
    if flat.get("verdict"):
        top["verdict"] = flat["verdict"]
    rest = {k: v for k, v in flat.items() if k not in ("name", "question", "hypothesis", "base_config", "overrides",
                                                       "verdict")}
    return {**top, "search": rest}
