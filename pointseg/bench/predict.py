"""Whole-scene prediction: time, throughput and peak memory against the scene size, beside the bare network's own
speed on the same machine in the same run (`make bench-predict`).

    python -m pointseg.bench.predict [--sizes 4000 10000] [--threads 1 2] [--windows 0 512] [--many 4 16]
                                     [--out results/bench_predict.json]

The network rows time the bare forward pass of the same Unet (batches of 4 × 512², inference mode), as built
(channels_last) and as predict runs it (batch norm folded into the convolutions); at ``data.scale`` s it sees s²
of a scene's pixels, so predict's ceiling is that rate ÷ s², and each predict row says which share of either it
reaches. ``--windows``: 0 = predict's default (each block in one pass), N = a sliding window of N px (what
evaluate does), to say what the one-pass default bought. ``--many k …``: k copies of the smallest scene in one call,
which pays the start-up (imports, checkpoint) once. ``at most``: the share a call could reach if it only imported
torch, torchvision and timm and ran the network (folded): what the imports alone leave of a one-scene call.

For each size an RGB GeoTIFF of size×size pixels (UTM georeferencing, tiled, made from real Dubai parts when
``data/`` has them, else a synthetic pattern) is written to a temporary folder, and ``python -m pointseg predict``
runs on it in a fresh child process with the default model (weights do not change the cost). The child reports
its own peak resident memory (``ru_maxrss``), so each row is one process's peak, and not the largest so far.
Memory should be set by the block (``--chunk``) and the model, not by the scene: 16 and 100 Mpx should differ
by little.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_NETWORK = """
import sys, time, torch
from pointseg.checkpoint import load_model
from pointseg.fuse import for_prediction
torch.set_num_threads(int(sys.argv[1]))
built = load_model(sys.argv[3])[0]
x = torch.rand(4, 3, 512, 512).to(memory_format=torch.channels_last)
rates = []
for m in (built, *for_prediction([built], 3, "cpu")):
    with torch.inference_mode():
        m(x)
        t = time.perf_counter()
        for _ in range(int(sys.argv[2])):
            m(x)
        rates.append(int(sys.argv[2]) * 4 * 512 * 512 / 1e6 / (time.perf_counter() - t))
print("NETWORK", *rates, flush=True)
"""

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


_IMPORTS = """
import sys, time
t = time.perf_counter()
import torch
a = time.perf_counter()
import torchvision, timm
print("IMPORTS", a - t, time.perf_counter() - t, flush=True)
"""

_START = """
import sys, time
t = time.perf_counter()
import torch
from pointseg import checkpoint, cli, fuse, scene
torch.set_num_threads(int(sys.argv[1]))
fuse.for_prediction([checkpoint.load_model(sys.argv[2])[0]], 3, "cpu")
print("START", time.perf_counter() - t, flush=True)
"""


def _child_numbers(script: str, tag: str, threads: int, *args: str) -> list[float]:
    """Run ``script`` in a fresh process at ``threads`` threads and read the numbers it prints after ``tag``."""
    r = subprocess.run([sys.executable, "-c", script, str(threads), *args], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    line = [ln for ln in r.stdout.splitlines() if ln.startswith(tag)]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"the {tag.lower()} bench failed:\n{r.stderr[-2000:]}")
    return [float(v) for v in line[0].split()[1:]]


def start_seconds(ckpt: Path, threads: int) -> float:
    """What predict spends before its first block, in a fresh process: importing torch, smp and timm (which loads
    torchvision and torch._dynamo) and loading the checkpoint. A fixed cost per call, however large the scenes."""
    return _child_numbers(_START, "START", threads, str(ckpt))[0]


def import_seconds(threads: int) -> tuple[float, float]:
    """Seconds to import torch alone, and torch with torchvision and timm (the stack every smp model needs), in a
    fresh process: the floor of any call that predicts with such a model, whatever predict itself does."""
    torch_s, stack_s = _child_numbers(_IMPORTS, "IMPORTS", threads)
    return torch_s, stack_s


def network_rates(ckpt: Path, threads: int, batches: int = 5) -> tuple[float, float]:
    """Mpx/s of the bare forward pass, in a fresh process at ``threads`` threads: of the model as ``ckpt`` loads
    (channels_last), and of the model predict runs (batch norm folded, pointseg/fuse.py)."""
    built, folded = _child_numbers(_NETWORK, "NETWORK", threads, str(batches), str(ckpt))
    return built, folded


def run_one(ckpt: Path, scene: Path, out: Path, chunk: int, threads: int | None = None, window: int = 0) -> dict:
    extra = (["--threads", str(threads)] if threads else []) + (["--window", str(window)] if window else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    r = subprocess.run([sys.executable, "-c", _CHILD, "predict", str(ckpt), "--inputs", str(scene), "--output",
                        str(out), "--chunk", str(chunk), "--overwrite", *extra], capture_output=True, text=True,
                       env=env)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCH")]
    if r.returncode != 0 or not line:
        raise RuntimeError(f"predict failed on {scene}:\n{r.stderr[-2000:]}")
    seconds, rss_kb = float(line[0].split()[1]), int(line[0].split()[2])
    return {"seconds": seconds, "peak_rss_mb": rss_kb / 1024, "gdal_error_lines": r.stderr.count("ERROR")}


def _scene(r: dict) -> str:
    many = f"{r['scenes']} × " if r.get("scenes", 1) > 1 else ""
    window = "512 (the default then)" if "window" not in r else (f"window {r['window']}" if r["window"] else "")
    return f"{many}{r['size']}×{r['size']}" + (f", {window}" if window else "")


LOAD = "load_before"  # the 1-minute load average just before a row ran: about 0 on an idle machine


def _share(r: dict, limit_key: str, seconds: float | None = None) -> str:
    limit = r.get(limit_key)
    seconds = r["seconds"] if seconds is None else seconds
    return f"{r['mpx'] / seconds / limit:.2f}" if limit and seconds > 0 else "—"


def _reachable(r: dict) -> str:
    """The share of the built network's rate that a call would reach if it did nothing but import the model's
    libraries and run the network as predict runs it (folded; as built in rows timed before the fold): the ceiling
    that the imports alone set on one call."""
    built, stack = r.get("limit_built_mpx_per_s"), r.get("import_stack_seconds")
    runs = r.get("limit_mpx_per_s") or built
    if not built or stack is None:
        return "—"
    return f"{r['mpx'] / built / (stack + r['mpx'] / runs):.2f}"


def markdown_table(rows: list[dict]) -> str:
    """One line per predict run; rows written before the network was timed beside them leave its columns empty.
    ``limit``: the network's own rate ÷ scale², of the model as built (the Unet, channels_last) and as predict runs
    it (batch norm folded); the shares are predict's rate over each. ``start-up``: the imports and the checkpoint
    load (:func:`start_seconds`), a fixed cost per call; the share after it is the rate at which predict turns
    pixels into a map once running. ``load``: what else ran (2 on a 2-core machine busy with two training lanes);
    the share is then still a fair comparison, the network row having run in the same conditions, but the times
    are not an idle machine's. ``at most``: the share of built that a call doing nothing but importing torch,
    torchvision and timm and running the network as predict runs it would reach (:func:`_reachable`)."""
    lines = ["| scene | Mpx | threads | time (s) | of it start-up (s) | Mpx/s | limit as built / folded (Mpx/s) | "
             "share of built | at most (imports + network) | share of folded | of folded after start-up | "
             "peak RSS (MB) | load |", "|---" * 13 + "|"]
    for r in rows:
        if "limit_built_mpx_per_s" not in r:  # timed before predict folded batch norm: its network was as built
            r = {**r, "limit_built_mpx_per_s": r.get("limit_mpx_per_s"), "limit_mpx_per_s": None}
        start = r.get("start_seconds")
        limits = " / ".join(f"{r[k]:.2f}" if r.get(k) else "—" for k in ("limit_built_mpx_per_s", "limit_mpx_per_s"))
        running = r["seconds"] - start if start is not None else 0  # timed in two processes: may come out ≤ 0
        lines.append(f"| {_scene(r)} | {r['mpx']:.0f} | {r.get('threads', '—')} | {r['seconds']:.0f} | "
                     f"{f'{start:.1f}' if start is not None else '—'} | {r['mpx_per_s']:.2f} | {limits} | "
                     f"{_share(r, 'limit_built_mpx_per_s')} | {_reachable(r)} | {_share(r, 'limit_mpx_per_s')} | "
                     f"{_share(r, 'limit_mpx_per_s', running)} | {r['peak_rss_mb']:.0f} | "
                     f"{f'{r[LOAD]:.1f}' if LOAD in r else '—'} |")
    return "\n".join(lines)


def scenes(sizes: list[int]) -> Iterator[tuple[Path, Path, int, Path]]:
    """(temporary folder, a default checkpoint in it, size, a size×size scene in it) for each size; each scene is
    removed once its rows are timed, and the folder at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = checkpoint(tmp)
        for size in sizes:
            scene = tmp / f"scene_{size}.tif"
            t = time.perf_counter()
            write_scene(scene, size)
            print(f"wrote {scene.name} in {time.perf_counter() - t:.0f} s; predicting…", file=sys.stderr, flush=True)
            yield tmp, ckpt, size, scene
            scene.unlink()


def _copies(scene: Path, k: int) -> Path:
    """A folder of ``k`` links to ``scene``: many scenes in one call, which pays the start-up once."""
    folder = scene.parent / f"{scene.stem}_x{k}"
    folder.mkdir()
    for i in range(k):
        (folder / f"{scene.stem}_{i}.tif").symlink_to(scene)
    return folder


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[4000, 10000], help="scene sides in pixels")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--windows", nargs="+", type=int, default=[0, 512], help="0 = one pass per block (default)")
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--many", nargs="*", type=int, default=[4, 16],
                    help="also predict this many copies of the smallest scene in one call, for each count given")
    ap.add_argument("--network-batches", type=int, default=5, help="batches of 4 × 512² the network row times")
    ap.add_argument("--out", default="results/bench_predict.json")
    args = ap.parse_args(argv)
    from pointseg.config import load_config

    scale = load_config("experiments/points.yaml").data.scale
    rows = []
    for tmp, ckpt, size, scene in scenes(args.sizes):
        folders = [(_copies(scene, k), k) for k in args.many if k > 1] if size == min(args.sizes) else []
        for threads in args.threads:
            # timed beside the predict runs it bounds, not once for all
            built, net = network_rates(ckpt, threads, args.network_batches)
            torch_s, stack_s = import_seconds(threads)
            limits = {"import_torch_seconds": torch_s, "import_stack_seconds": stack_s,
                      "network_built_mpx_per_s": built, "network_mpx_per_s": net,
                      "start_seconds": start_seconds(ckpt, threads), "limit_mpx_per_s": net / scale ** 2,
                      "limit_built_mpx_per_s": built / scale ** 2}
            runs = [(scene, 1, w) for w in args.windows] + [(folder, k, 0) for folder, k in folders]
            for inputs, count, window in runs:
                row = {LOAD: os.getloadavg()[0], "size": size, "scenes": count, "mpx": count * size * size / 1e6,
                       "chunk": args.chunk, "threads": threads, "window": window, **limits,
                       **run_one(ckpt, inputs, tmp / "out", args.chunk, threads, window)}
                row["mpx_per_s"] = row["mpx"] / row["seconds"]
                rows.append(row)
                print(markdown_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    from pointseg.export import code_version, cpu_model
    from pointseg.io import write_json

    write_json(args.out, {"rows": rows, "cpu": cpu_model(), "code": code_version()})
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
