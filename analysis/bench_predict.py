"""Whole-scene prediction: time, throughput and peak memory against the scene size (`make bench-predict`).

    python -m analysis.bench_predict [--sizes 4000 10000] [--out results/bench_predict.json]

For each size an RGB GeoTIFF of size×size pixels (UTM georeferencing, tiled, made from real Dubai parts when
``data/`` has them, else a synthetic pattern) is written to a temporary folder, and ``python -m pointseg predict``
runs on it in a fresh child process with the default model (weights do not change the cost). The child reports
its own peak resident memory (``ru_maxrss``), so each row is one process's peak, and not the largest so far.
Memory should be set by the block (``--chunk``) and the model, not by the scene: 16 and 100 Mpx should differ
by little.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = """
import resource, sys, time
from pointseg.cli import main
t = time.perf_counter()
rc = main(sys.argv[1:])
print("BENCH", time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(rc)
"""


def _texture(block: int = 1024) -> np.ndarray:
    """A block×block×3 uint8 texture: a real Dubai part when present (so the model sees real structure)."""
    root = Path("data/dubai-aerial")
    parts = sorted(root.glob("Tile 5/images/*.jpg"))
    if parts:
        from pointseg.data.dataset import resize_image
        from pointseg.data.raster import read_image

        return resize_image(read_image(parts[0]), (block, block))
    rng = np.random.default_rng(0)
    return np.kron(rng.integers(0, 255, (block // 32, block // 32, 3)), np.ones((32, 32, 1))).astype(np.uint8)


def write_scene(path: Path, size: int) -> None:
    """A size×size RGB GeoTIFF written block by block (the writer's memory does not grow with the scene)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    tex = _texture().transpose(2, 0, 1)
    b = tex.shape[1]
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32640", BIGTIFF="IF_SAFER",
                       transform=from_origin(300000, 2800000, 0.5, 0.5)) as dst:
        for r in range(0, size, b):
            for c in range(0, size, b):
                h, w = min(b, size - r), min(b, size - c)
                dst.write(tex[:, :h, :w], window=Window(c, r, w, h))


def checkpoint(folder: Path) -> Path:
    """A best.pt of the default config with untrained decoder weights: the cost of predict, not its quality."""
    import torch

    from pointseg.config import load_config
    from pointseg.models import build_model

    cfg = load_config("experiments/points.yaml")
    model = build_model(cfg.model.arch, cfg.model.encoder, 5, "none", cfg.model.decoder_channels)
    path = folder / "best.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "num_classes": 5, "epoch": 0,
                "class_names": list("BLRVW"), "style": None}, path)
    return path


def run_one(ckpt: Path, scene: Path, out: Path, chunk: int) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, "predict", str(ckpt), "--inputs", str(scene), "--output",
                        str(out), "--chunk", str(chunk), "--overwrite"], capture_output=True, text=True)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCH")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"predict failed on {scene}:\n{r.stderr[-2000:]}")
    seconds, rss_kb = float(line[0].split()[1]), int(line[0].split()[2])
    return {"seconds": seconds, "peak_rss_mb": rss_kb / 1024, "gdal_error_lines": r.stderr.count("ERROR")}


def markdown_table(rows: list[dict]) -> str:
    lines = ["| scene | Mpx | time (s) | Mpx/s | peak RSS (MB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']}×{r['size']} | {r['mpx']:.0f} | {r['seconds']:.0f} | {r['mpx_per_s']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[4000, 10000], help="scene sides in pixels")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--out", default="results/bench_predict.json")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = checkpoint(tmp)
        for size in args.sizes:
            scene = tmp / f"scene_{size}.tif"
            t = time.perf_counter()
            write_scene(scene, size)
            print(f"wrote {scene.name} in {time.perf_counter() - t:.0f} s; predicting…", file=sys.stderr, flush=True)
            row = {"size": size, "mpx": size * size / 1e6, "chunk": args.chunk,
                   **run_one(ckpt, scene, tmp / "out", args.chunk)}
            row["mpx_per_s"] = row["mpx"] / row["seconds"]
            rows.append(row)
            scene.unlink()
    import os

    from pointseg.export import code_version
    from pointseg.io import write_json

    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    write_json(args.out, {"rows": rows, "threads": threads, "code": code_version()})
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
