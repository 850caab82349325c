"""A study's table from its exports: test mIoU per cell with a two-level bootstrap 95 % interval (seeds × test
images), per test tile, and the paired ratio and difference against a reference cell on the seeds both have.

    python -m analysis.summarize convergence --metric val/miou
    python -m analysis.summarize label-efficiency --reference full
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .headline import parts_section, study_headline
from .results import RESULTS, confusions, frame, load_records, paired_on_shared_seeds
from .stats import bootstrap_miou, fmt, holm, interval, mean_ci


def study_table(study: str, reference: str | None = None, metric: str = "test/miou", root=RESULTS,
                n_boot: int = 2000, references: dict[str, str] | None = None,
                order: list[str] | None = None, development: bool = False) -> pd.DataFrame:
    """``references``: cells compared with another cell than ``reference`` (a style-shifted copy matched back
    is compared with the shifted copy, not with the original). ``order``: the cells' order (the study file's);
    cells not in it follow in the order they were found."""
    recs = load_records(study, root)
    if not recs:
        raise SystemExit(f"no exported runs under {root}/{study}: run the study first")
    df = frame(recs)
    if development:
        return development_table(df, metric, reference, references, order)
    rows = []
    for cell, g in df.groupby("cell", sort=False):
        m, h, n = mean_ci(g[metric].tolist())
        row = {"cell": cell, "seeds": n, f"{metric} (t 95 % CI over seeds)": fmt(m, h, n), "_mean": m}
        est, lo, hi = bootstrap_miou(confusions(recs, cell), n_boot)
        row["test mIoU [bootstrap 95 %]"] = interval(est, lo, hi)
        for col in sorted(c for c in g.columns if c.startswith("test/group/")):
            row[f"tile {col.split('/')[2]}"] = f"{g[col].mean():.3f}"
        row["min class IoU (test)"] = f"{g[[c for c in g.columns if c.startswith('test/iou/')]].min(axis=1).min():.3f}"
        row["ran on"] = " + ".join(sorted(set(g["machine"])))  # wall times compare only within one machine
        row["train min/run"] = f"{g['train/seconds'].mean() / 60:.1f}"
        ref = (references or {}).get(cell, reference)
        if ref and cell != ref and ref in set(df.cell):
            r = paired_on_shared_seeds(recs, cell, ref, "ratio", n_boot)
            d = paired_on_shared_seeds(recs, cell, ref, "diff", n_boot)
            if d is not None:
                row["_ref"] = ref
                row["_ratio"] = interval(*r[:3])
                row["_diff"] = interval(*d[:3], signed=True)
                row["_p"] = d.p
        rows.append(row)
    out = _comparison_columns(pd.DataFrame(rows))
    out = _in_order(out, order)
    if "_p" in out:
        ok = out["_p"].notna()
        # a bootstrap p of 0 means no draw crossed "no difference": below 1 / n_boot, not 0
        out.loc[ok, "p (Holm)"] = [f"{p:.3f}" if p >= 1 / n_boot else f"< {1 / n_boot:.4f}"
                                   for p in holm(out.loc[ok, "_p"].tolist())]
    out = out.drop(columns=[c for c in out.columns if c.startswith("_")])
    return out.fillna("—")


def development_table(df: pd.DataFrame, metric: str, reference: str | None = None,
                      references: dict[str, str] | None = None, order: list[str] | None = None) -> pd.DataFrame:
    """A study that chooses on a val metric: that metric per cell and its paired difference to the reference over
    the seeds both have (t-interval), and nothing of test. Its runs' exports hold test numbers; a development
    study's table does not show them, so choosing by it never looks at the test images."""
    if metric not in df:
        raise SystemExit(f"no run of this study exported {metric}")
    rows = []
    for cell, g in df.groupby("cell", sort=False):
        m, h, n = mean_ci(g[metric].tolist())
        row = {"cell": cell, "seeds": n, f"{metric} (t 95 % CI over seeds)": fmt(m, h, n)}
        ref = (references or {}).get(cell, reference)
        if ref and cell != ref and ref in set(df.cell):
            mine, theirs = (df[df.cell == c].set_index("seed")[metric] for c in (cell, ref))
            both = sorted(set(mine.index) & set(theirs.index))
            d, hd, nd = mean_ci([mine[k] - theirs[k] for k in both])
            row["_ref"] = ref
            row["_diff"] = (interval(d, d - hd, d + hd, signed=True) if nd > 1 else f"{d:+.3f} (n={nd})" if nd
                            else "—")
        if "val/miou" in g and metric != "val/miou":
            row["val mIoU, dense (diagnostic)"] = f"{g['val/miou'].mean():.3f}"
        row["ran on"] = " + ".join(sorted(set(g["machine"])))
        row["train min/run"] = f"{g['train/seconds'].mean() / 60:.1f}"
        rows.append(row)
    out = pd.DataFrame(rows)
    first = [c for c in ("_ref", "_diff") if c in out]  # the comparison beside the metric it compares
    out = out[[*out.columns[:3], *first, *[c for c in out.columns[3:] if c not in first]]]
    out = _in_order(_comparison_columns(out, ", paired by seed"), order)
    return out.fillna("—")


def _in_order(out: pd.DataFrame, order: list[str] | None) -> pd.DataFrame:
    """The rows in the study file's cell order; cells not in it follow in the order they were found."""
    if not order:
        return out
    rank = {c: i for i, c in enumerate(order)}
    return out.iloc[sorted(range(len(out)), key=lambda i: (rank.get(out.cell.iloc[i], len(rank)), i))]


def _comparison_columns(out: pd.DataFrame, how: str = "") -> pd.DataFrame:
    """One reference: columns named after it (``÷ full [95 %]``). Several (each budget against its own pfCE cell):
    one ``compared with`` column beside a single ratio and difference, so the table does not grow a pair of
    columns per reference. ``how`` says how the difference was paired (``, paired by seed``)."""
    if "_ref" not in out:
        return out
    refs = out["_ref"].dropna().unique()
    if len(refs) == 1:
        return out.rename(columns={"_ratio": f"÷ {refs[0]} [95 %]", "_diff": f"− {refs[0]}{how} [95 %]"}
                          ).drop(columns="_ref")
    return out.rename(columns={"_ref": "compared with", "_ratio": "÷ it [95 %]", "_diff": f"− it{how} [95 %]"})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--reference", help="cell the others are compared with, paired by seed (default: the study "
                    "file's reference)")
    ap.add_argument("--metric", help="default: the study file's metric, else test/miou")
    ap.add_argument("--root", default=str(RESULTS))
    ap.add_argument("--studies-dir", default="experiments/studies",
                    help="where the study file lives: its cells' own references (reference: in a cell) apply")
    ap.add_argument("--headline", action="store_true",
                    help="also the study's headline (points ÷ full with its interval) and each framework part's gain")
    args = ap.parse_args(argv)
    sf = _study_file(args.studies_dir, args.study)
    print(study_table(args.study, args.reference or (sf.reference if sf else None),
                      args.metric or (sf.metric if sf else "test/miou"), args.root,
                      references=sf.cell_references() if sf else {},
                      order=[c.id for c in sf.cells] if sf else None,
                      development=bool(sf and sf.development)).to_markdown(index=False))
    if args.headline and sf:
        print("", *study_headline(sf, args.root), *parts_section(args.root), sep="\n")
    return 0


def _study_file(studies_dir: str, study: str):
    """The study file (its reference, metric, the cells' own references and their order), when there is one."""

    from sweeps.studyfile import StudyFile

    path = Path(studies_dir) / f"{study}.yaml"
    return StudyFile.load(path) if path.exists() else None


if __name__ == "__main__":
    raise SystemExit(main())
