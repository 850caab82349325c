"""The pseudo-labels of a study's self-trained cells, recomputed from their teachers' weights with the per-class
breakdown (coverage and precision against the dense masks, a diagnostic never used), for runs that recorded only
the totals. Writes ``results/<study>/pseudo-labels.json``, which the report reads. Needs the teachers' best.pt;
a teacher whose weights differ from the ones the run recorded (SHA-256) is refused.

    python -m sweeps.pseudo_labels experiments/studies/self-training.yaml
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pointseg.config import ConfigError
from pointseg.export import read_export
from pointseg.inputs import load_split, make_targets
from pointseg.io import write_json
from pointseg.selftrain import pseudo_targets

from .studyfile import StudyFile

FILE = "pseudo-labels.json"


def recompute(study: StudyFile, export_dir: str = "results") -> Path:
    out = {}
    for cell in study.cells:
        for seed in study.seeds:
            cfg = study.config(cell, seed, export_dir=export_dir)
            if not cfg.selftrain.teacher:
                continue
            path, exported = read_export(
                cfg, lambda p, keys: ConfigError(f"{p} holds a run of another config ({keys})"))
            if exported is None:
                continue
            train = load_split(cfg, "train")
            _, rec = pseudo_targets(cfg, train, make_targets(cfg, train)[0])
            ran = exported["points"]["selftrain"]
            if rec["teacher_sha256"] != ran["teacher_sha256"]:
                raise ConfigError(f"{rec['teacher']}: not the weights {path} trained from (SHA-256 differs)")
            out[f"{cell.id}/seed{seed}"] = rec
    dst = Path(export_dir) / study.name / FILE
    write_json(dst, out)
    return dst


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--export-dir", default="results")
    args = ap.parse_args(argv)
    print(recompute(StudyFile.load(args.study), args.export_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
