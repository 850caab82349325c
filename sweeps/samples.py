"""Add the sample predictions (pointseg/samples.py) to exports written before runs exported them.

    python -m sweeps.samples results/unlabelled results/label-efficiency [--runs runs/studies]

For every export without ``samples`` whose run directory still holds its ``best.pt``
(``<runs>/<config name>/seed<k>``: a reused export points at the run that trained it), the picked test images and
the click example are predicted again with those weights and written into the export. Scores are not touched.
Exports whose checkpoint is gone are listed and left as they are.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("pointseg.samples")


def backfill(export: Path, runs: Path) -> bool:
    from pointseg.checkpoint import load_model
    from pointseg.data.dataset import DatasetSpec
    from pointseg.inputs import load_split, make_targets
    from pointseg.io import write_json
    from pointseg.samples import click_example_index, make_samples

    rec = json.loads(export.read_text())
    if "samples" in rec:
        return False
    run_dir = runs / rec["config"]["name"] / f"seed{rec['seed']}"
    if not (run_dir / "best.pt").exists():
        log.warning("%s: no %s/best.pt any more; left without samples", export, run_dir)
        return False
    model, cfg, ckpt = load_model(run_dir)
    if cfg.train.histogram_match:
        log.warning("%s: trained with histogram matching, whose style is not stored in best.pt; skipped", export)
        return False
    spec = DatasetSpec.load(cfg.data.dataset)
    train = load_split(cfg, "train")
    first = click_example_index(train)
    clicks = make_targets(cfg, [train[first]])[0][0] if cfg.points.supervision == "points" else None
    e = cfg.eval
    kw = dict(window=e.window, overlap=e.overlap, batch_size=e.batch_size, device="cpu", style=None)
    rec["samples"] = make_samples(model, load_split(cfg, "test"), kw, list(spec.class_names), spec.display_colors(),
                                  (train[first], clicks))
    write_json(export, rec)
    log.info("%s: samples added from %s", export, run_dir)
    return True


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="results/<study> folders (or single export files)")
    ap.add_argument("--runs", default="runs/studies", help="where the studies' run directories are")
    args = ap.parse_args(argv)
    paths = [p for f in map(Path, args.folders) for p in ([f] if f.is_file() else sorted(f.glob("**/seed*.json")))]
    added = sum(backfill(p, Path(args.runs)) for p in paths)
    print(f"samples added to {added} of {len(paths)} exports")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
