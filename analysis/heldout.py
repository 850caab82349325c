"""Held-out claims from a cross-validation study: cells that name a ``fold`` (ids ``t<fold>-<arm>``, as in
experiments/studies/heldout-tiles.yaml) → a table per fold, per-class IoU pooled over folds, and each arm's ratio
to the ceiling pooled over the folds (analysis.stats.bootstrap_pooled).

    python -m analysis.heldout heldout-tiles

Reads exports only. A pooled estimate needs every fold at a shared seed; before that the table says which folds
are pending.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps.studyfile import StudyFile

from .results import RESULTS, confusions, frame, load_records, paired_on_shared_seeds, shared_seeds
from .stats import bootstrap_pooled, interval, miou_of, t_interval

CEILING = "full"
ARMS = ("best", "default", "teacher")  # each compared with the ceiling of its own fold


def _fold_miou(recs: list[dict], cell: str, seeds: list[int]) -> float:
    return float(miou_of(confusions(recs, cell, seeds).sum(axis=1)).mean())


def fold_table(study: StudyFile, root: str | Path = RESULTS) -> pd.DataFrame:
    """One row per fold: each arm's test mIoU (mean over its seeds), best and default ÷ the fold's ceiling and
    best − default, paired over the seeds they share and the fold's test images."""
    recs = load_records(study.name, root)
    have = {r["cell"] for r in recs}
    rows = []
    for fold, cells in study.folds().items():
        row: dict[str, object] = {"test tile": fold}
        for arm in (CEILING, *ARMS):
            cell = cells.get(arm)
            seeds = sorted(r["seed"] for r in recs if r["cell"] == cell)
            row[arm] = f"{_fold_miou(recs, cell, seeds):.3f}" if cell in have else "pending"
        pair = {cells["best"], cells[CEILING]}
        row["seeds"] = len(shared_seeds(recs, cells["best"], cells[CEILING])) if pair <= have else 0
        for a, b, how in (("best", CEILING, "ratio"), ("default", CEILING, "ratio"), ("best", "default", "diff")):
            r = paired_on_shared_seeds(recs, cells[a], cells[b], how) if {cells[a], cells[b]} <= have else None
            row[f"{a} {'÷' if how == 'ratio' else '−'} {b} [95 %]"] = (interval(*r[:3], signed=how == "diff")
                                                                      if r else "—")
        rows.append(row)
    return pd.DataFrame(rows)


def per_class_table(study: StudyFile, root: str | Path = RESULTS) -> pd.DataFrame:
    """Per class, the test IoU of the ceiling and each arm averaged over the folds where all of them finished (so
    every column and difference covers the same test tiles), and each arm's difference to the ceiling."""
    recs = load_records(study.name, root)
    df = frame(recs)
    if df.empty:
        return pd.DataFrame()
    classes = [c.removeprefix("test/iou/") for c in df.columns if c.startswith("test/iou/")]
    arms = (CEILING, *ARMS)
    common = [study.folds()[f] for f in _finished_folds(study, set(df.cell))]
    if not common:
        return pd.DataFrame()
    rows = []
    for name in classes:
        mean = {a: np.nanmean([df.loc[df.cell == c[a], f"test/iou/{name}"].mean() for c in common]) for a in arms}
        rows.append({"class": name, **{a: f"{mean[a]:.3f}" for a in arms},
                     **{f"{a} − {CEILING}": f"{mean[a] - mean[CEILING]:+.3f}" for a in ARMS}})
    return pd.DataFrame(rows)


def common_folds(study: StudyFile, root: str | Path = RESULTS) -> list[str]:
    """The folds where the ceiling and every arm have finished."""
    return _finished_folds(study, {r["cell"] for r in load_records(study.name, root)})


def _finished_folds(study: StudyFile, have: set[str]) -> list[str]:
    return [f for f, cells in study.folds().items() if all(a in cells and cells[a] in have for a in (CEILING, *ARMS))]


def pooled(study: StudyFile, arm: str, ref: str = CEILING, how: str = "ratio", root: str | Path = RESULTS,
           n_boot: int = 2000) -> dict[str, object]:
    """``arm`` against ``ref`` pooled over every fold that has both at a shared seed: the estimate, the bootstrap
    interval over folds, seeds and images, the t-interval over the per-fold values, and how many folds went in."""
    recs = load_records(study.name, root)
    have = {r["cell"] for r in recs}
    fa, fb, per_fold, used, n_seeds = [], [], [], [], []
    for fold, cells in study.folds().items():
        if arm not in cells or ref not in cells or not {cells[arm], cells[ref]} <= have:
            continue
        seeds = shared_seeds(recs, cells[arm], cells[ref])
        if not seeds:
            continue
        a, b = confusions(recs, cells[arm], seeds), confusions(recs, cells[ref], seeds)
        fa.append(a)
        fb.append(b)
        ma, mb = miou_of(a.sum(1)).mean(), miou_of(b.sum(1)).mean()
        per_fold.append(ma / mb if how == "ratio" else ma - mb)
        used.append(fold)
        n_seeds.append(len(seeds))
    out: dict[str, object] = {"arm": arm, "ref": ref, "how": how, "folds": used, "of": len(study.folds()),
                              "seeds": n_seeds}
    if used:
        out["bootstrap"] = bootstrap_pooled(fa, fb, n_boot, how=how)
        out["t"] = t_interval(per_fold)
        out["per_fold"] = per_fold
    return out


def pooled_table(study: StudyFile, root: str | Path = RESULTS) -> pd.DataFrame:
    rows = []
    for arm, ref, how in (("best", CEILING, "ratio"), ("default", CEILING, "ratio"), ("teacher", CEILING, "ratio"),
                          ("best", "default", "diff"), ("best", "teacher", "diff")):  # the last: self-training's gain
        p = pooled(study, arm, ref, how, root)
        signed = how == "diff"
        complete = len(p["folds"]) == p["of"]
        rows.append({"comparison": f"{arm} {'÷' if how == 'ratio' else '−'} {ref}",
                     "folds": f"{len(p['folds'])} of {p['of']}" + ("" if complete else " (pending: not the claim)"),
                     "pooled [95 %, bootstrap over folds, seeds, images]":
                         interval(*p["bootstrap"][:3], signed=signed) if p["folds"] else "—",
                     "t-interval over folds": interval(*p["t"], signed=signed) if len(p["folds"]) > 1 else "—",
                     "lowest fold": (f"{min(p['per_fold']):{'+' if signed else ''}.3f} (tile "
                                     f"{p['folds'][int(np.argmin(p['per_fold']))]})") if p["folds"] else "—"})
    return pd.DataFrame(rows)


def section(study: StudyFile, root: str | Path = RESULTS) -> list[str]:
    """The held-out tables of a study with folds, as report lines."""
    return ["Per fold (each tile the test tile once; the arms' test mIoU, mean over seeds; ratios and differences "
            "paired over the seeds both arms have and the fold's test images):", "",
            fold_table(study, root).to_markdown(index=False), "",
            "Pooled over the folds (the ratio of the mean over folds of each arm's fold mIoU; the decision rule "
            "reads the first row):", "", pooled_table(study, root).to_markdown(index=False), "",
            f"Test IoU per class, averaged over the folds where every arm finished (tiles "
            f"{', '.join(common_folds(study, root)) or 'none yet'}):", "",
            per_class_table(study, root).to_markdown(index=False), ""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="a study with fold cells, e.g. heldout-tiles")
    ap.add_argument("--root", default=str(RESULTS))
    ap.add_argument("--studies-dir", default="experiments/studies")
    args = ap.parse_args(argv)
    print("\n".join(section(StudyFile.load(Path(args.studies_dir) / f"{args.study}.yaml"), args.root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
