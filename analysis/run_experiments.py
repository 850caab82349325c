"""`make experiments`: the label-efficiency study (points per class vs full masks, seeds 0 1 2 on the reference
schedule), resumable and background-friendly, then its table: test mIoU with two-level bootstrap intervals and the
paired points ÷ full ratio per budget.

    python -m analysis.run_experiments [--study experiments/studies/label-efficiency.yaml] [--seeds 0 1 2]
    nohup make experiments > experiments.log 2>&1 &     # a stopped run resumes where it stopped
"""

from __future__ import annotations

import argparse
import logging

from .study import StudyFile, run_study
from .summarize import study_table


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="experiments/studies/label-efficiency.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, help="default: the study's seeds")
    ap.add_argument("--out-dir", default="runs/studies")
    ap.add_argument("--export-dir", default="results")
    args = ap.parse_args(argv)
    study = StudyFile.load(args.study)
    run_study(study, args.seeds, out_dir=args.out_dir, export_dir=args.export_dir)
    print(study_table(study.name, study.reference, study.metric, args.export_dir).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
