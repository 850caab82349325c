"""Qualitative maps of a finished fold study: each arm's prediction of a held-out test image at full resolution,
cropped, written beside the study's exports so that `make report` draws them without a checkpoint.

    python -m sweeps.maps experiments/studies/heldout-tiles.yaml [--seed 0] [--size 512]

For each fold whose runs are on this machine (``runs/studies/<study>/<cell>/seed<k>/best.pt``): the first test
image by name, its centre crop of ``size`` px at the masks' resolution (chosen before looking: no picking of a
flattering crop), written as ``results/<study>/maps/t<fold>-{image.jpg, truth.png, <arm>.png}`` (class maps as
palette PNGs) and ``maps.json`` (which image, the crop, the classes and their colours). A fold whose runs are
not here is skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pointseg.io import write_json

log = logging.getLogger("pointseg.maps")
ARMS = ("default", "best", "full")
NO_LABEL = 255


def _palette(colors: list[tuple[int, int, int]]) -> list[int]:
    flat = [v for c in colors for v in c] + [0, 0, 0] * (256 - len(colors))
    flat[NO_LABEL * 3:NO_LABEL * 3 + 3] = [0, 0, 0]
    return flat


def _crop(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(size, h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return a[y:y + s, x:x + s]


def write_maps(study_file: str, seed: int = 0, size: int = 512, runs: str = "runs/studies",
               results: str = "results") -> list[Path]:
    from pointseg.checkpoint import load_model
    from pointseg.data.raster import read_image
    from pointseg.infer import predict_probs, to_full_resolution
    from pointseg.inputs import load_split

    from .studyfile import StudyFile

    study = StudyFile.load(study_file)
    out = Path(results) / study.name / "maps"
    written, index = [], {}
    for fold, cells in study.folds().items():
        dirs = {arm: Path(runs) / study.name / cells[arm] / f"seed{seed}" for arm in ARMS}
        missing = [str(d) for d in dirs.values() if not (d / "best.pt").exists()]
        if missing:
            log.info("fold %s: skipped, no finished run at %s", fold, ", ".join(missing))
            continue
        cfg = study.config(study.cells[[c.id for c in study.cells].index(cells["full"])], seed)
        scene = sorted(load_split(cfg, "test"), key=lambda s: s.name)[0]
        out.mkdir(parents=True, exist_ok=True)
        colors = None
        for arm, d in dirs.items():
            model, _, ckpt = load_model(d)
            colors = colors or [tuple(c) for c in ckpt["data"]["colors"]]
            with torch.inference_mode():
                probs = predict_probs(model, scene.image, cfg.eval.window, cfg.eval.overlap, cfg.eval.batch_size)
            pred = to_full_resolution(probs, scene.full_mask.shape).numpy().astype(np.uint8)
            img = Image.fromarray(_crop(pred, size), mode="P")
            img.putpalette(_palette(colors))
            img.save(out / f"t{fold}-{arm}.png", optimize=True)
            written.append(out / f"t{fold}-{arm}.png")
        truth = Image.fromarray(_crop(scene.full_mask, size), mode="P")
        truth.putpalette(_palette(colors))
        truth.save(out / f"t{fold}-truth.png", optimize=True)
        rgb = read_image(scene.image_path)[..., :3]
        Image.fromarray(_crop(rgb, size)).save(out / f"t{fold}-image.jpg", quality=85)
        index[fold] = {"image": scene.name, "size": int(min(size, *scene.full_mask.shape)), "seed": seed,
                       "classes": list(ckpt["class_names"]), "colors": [list(c) for c in colors]}
        written += [out / f"t{fold}-truth.png", out / f"t{fold}-image.jpg"]
        log.info("fold %s: %s, centre %d px", fold, scene.name, size)
    if index:
        old = json.loads((out / "maps.json").read_text()) if (out / "maps.json").exists() else {}
        write_json(out / "maps.json", {**old, **index})
    return written


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args(argv)
    for p in write_maps(args.study, args.seed, args.size):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
