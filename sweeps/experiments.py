"""`make experiments`: the default method's label-efficiency study (pfCE + gated CRF and pfCE alone at 1–50 clicks
per class, and full masks; seeds 0 1 2 on the reference schedule), resumable and background-friendly, then its
table (test mIoU with two-level bootstrap intervals, each budget paired with pfCE alone), the headline (points ÷
full with its interval) and each framework part's paired gain, as far as their studies have run.

    python -m analysis.run_experiments [--study experiments/studies/label-efficiency-crf.yaml] [--seeds 0 1 2]
    nohup make experiments > experiments.log 2>&1 &     # a stopped run resumes where it stopped
"""

from __future__ import annotations

import argparse
import logging

from .headline import parts_section, study_headline
from .study import StudyFile, run_study
from .summarize import study_table


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="experiments/studies/label-efficiency-crf.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, help="default: the study's seeds")
    ap.add_argument("--out-dir", default="runs/studies")
    ap.add_argument("--export-dir", default="results")
    args = ap.parse_args(argv)
    study = StudyFile.load(args.study)
    run_study(study, args.seeds, out_dir=args.out_dir, export_dir=args.export_dir)
    print(study_table(study.name, study.reference, study.metric, args.export_dir, references=study.cell_references(),
                      order=[c.id for c in study.cells]).to_markdown(index=False), "", sep="\n")
    print("\n".join(study_headline(study, args.export_dir)))
    print("\n".join(parts_section(args.export_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
