"""What each part of whole-scene predict buys, once running: the same scene predicted in one process with batch
norm folded or not and the one-pass halo at 64 or 32 working-scale pixels (best of ``--repeats``, after a warm-up
call, so neither the start-up nor oneDNN's first-call set-up is counted).

    python -m pointseg.bench.predict_parts [--sizes 4000] [--threads 1 2] [--out results/bench_predict_parts.json]

The scene and the untrained model are those of ``pointseg.bench.predict`` (weights do not change the cost).
Reading and writing beside the network has no switch: the rows of ``results/bench_predict_before.json`` (the code
before it) and ``results/bench_predict.json`` hold it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .predict import scenes

VARIANTS = (("as built", False, 64), ("batch norm folded", True, 64), ("folded, halo 32", True, 32))


def time_variants(ckpt: Path, scene: Path, out: Path, threads: int, repeats: int = 2) -> list[dict]:
    """One row per variant: the best running time of ``predict_scene`` on ``scene`` at ``threads`` threads."""
    import torch

    from pointseg.checkpoint import load_model
    from pointseg.fuse import for_prediction
    from pointseg.scene import SceneInput, predict_scene

    torch.set_num_threads(threads)
    model, cfg, ckpt_data = load_model(ckpt)
    inp = SceneInput.from_checkpoint(ckpt_data, cfg, [(0, 0, 0)] * ckpt_data["num_classes"])
    folded = for_prediction([model], 3, "cpu")
    rows = []
    for name, fold, halo in VARIANTS:
        models = folded if fold else [model]
        run = [predict_scene(models, scene, out, inp, window=None, halo=round(halo / inp.scale), overwrite=True,
                             progress=False)
               for _ in range(repeats + 1)]  # the first call sets oneDNN up for the block shapes
        seconds = min(r["seconds"] for r in run[1:])
        rows.append({"variant": name, "fold": fold, "halo": halo, "threads": threads,
                     "mpx": run[0]["pixels"] / 1e6, "seconds": seconds})
        print(f"{name}, {threads} thread(s): {seconds:.2f} s", file=sys.stderr, flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| scene (Mpx) | threads | variant | seconds once running | Mpx/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['mpx']:.0f} | {r['threads']} | {r['variant']} | {r['seconds']:.2f} | "
              f"{r['mpx'] / r['seconds']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[4000])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="results/bench_predict_parts.json")
    args = ap.parse_args(argv)
    from pointseg.export import code_version, cpu_model
    from pointseg.io import write_json

    rows = []
    for tmp, ckpt, size, scene in scenes(args.sizes):
        for threads in args.threads:
            t = time.perf_counter()
            rows += time_variants(ckpt, scene, tmp / "out.tif", threads, args.repeats)
            print(f"{size} px, {threads} thread(s): {time.perf_counter() - t:.0f} s", file=sys.stderr)
    write_json(args.out, {"rows": rows, "cpu": cpu_model(), "code": code_version()})
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
