"""Run named experiments over seeds with the one trainer (resumable: finished runs are kept, killed runs resume),
then print test mIoU mean ± 95 % CI per experiment and the points ÷ full ratio.

    python -m analysis.run_experiments --seeds 0 1 2 [--configs experiments/points.yaml experiments/full.yaml]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pointseg.config import load_config
from pointseg.io import write_json
from pointseg.train import fit

from .stats import fmt, mean_ci


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", nargs="+", default=["experiments/points.yaml", "experiments/full.yaml"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out-dir", default="runs/experiments")
    ap.add_argument("overrides", nargs="*", help="key=value applied to every run")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:  # seed-major: an interrupted batch still has every config at some seeds
        for path in args.configs:
            cfg = load_config(path, [f"seed={seed}", f"out_dir={args.out_dir}", *args.overrides])
            res = fit(cfg)
            results.setdefault(cfg.name, []).append(res.final)
            print(f"{cfg.name} seed {seed}: test mIoU {res.final['test/miou']:.4f}", flush=True)
    summary = {}
    for name, finals in results.items():
        m, h, n = mean_ci([f["test/miou"] for f in finals])
        summary[name] = {"test/miou_mean": m, "test/miou_ci95": h, "n": n}
        print(f"{name:>12}: test mIoU {fmt(m, h, n)}")
    if "points" in summary and "full" in summary:
        ratio = summary["points"]["test/miou_mean"] / summary["full"]["test/miou_mean"]
        print(f"points ÷ full = {ratio:.3f}")
    write_json(Path(args.out_dir) / "summary.json", summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
