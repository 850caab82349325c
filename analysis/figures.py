"""The report's figures (seaborn): each takes a study, its run exports and the output folder, and returns the PNG's
name (None when the exports have nothing to draw). Deterministic: seeded intervals and jitter, no version stamp in
the PNGs, so a fresh clone's ``make report`` draws the same bytes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.patches import Patch

from pointseg.config import (
    Config,  # noqa: E402
    ConfigError,
    _suggest,
)
from sweeps.studyfile import StudyFile  # noqa: E402

from .results import confusions, frame, histories  # noqa: E402
from .stats import seed_interval  # noqa: E402

_PNG = {"metadata": {"Software": None}, "dpi": 120, "bbox_inches": "tight"}  # no version stamp: same bytes each time


def wrap(text: str, width: int) -> str:
    """Lines of at most ``width`` characters, broken between words only: a file name or a hyphenated word stays
    whole (``experiments/best-teacher.yaml`` was once cut into ``expe`` and ``riments``)."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _save(fig, out: Path, name: str) -> str:
    fig.savefig(out / name, **_PNG)
    plt.close(fig)
    return name


def convergence_figure(study: StudyFile, recs: list[dict], out: Path) -> str:
    df = frame(recs)
    h = histories(recs)
    steps = dict(zip(df.cell, df.steps))
    h["budget"] = h.cell.map(lambda c: f"{steps[c]} steps")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    # test beside val: the val tile (9 images) is too noisy to see a gain the 18 test images show
    final = df.melt(id_vars=["steps", "seed"], value_vars=["val/miou", "test/miou"], var_name="split",
                    value_name="mIoU")
    final = final.replace({"split": {"val/miou": "val (tile 4)", "test/miou": "test (tiles 5 + 8)"}})
    sns.lineplot(final, x="steps", y="mIoU", hue="split", marker="o", errorbar=seed_interval, ax=axes[0])
    axes[0].set(xscale="log", xlabel="training steps (log)", ylabel="mIoU (dense masks)",
                title="Final mIoU by budget (95 % t-interval over seeds)")
    axes[0].set_xticks(sorted(df.steps.unique()), [str(s) for s in sorted(df.steps.unique())])
    axes[0].set_xticks([], minor=True)  # a log axis labels its minor ticks ("9 × 10²") between the budgets
    order = [f"{s} steps" for s in sorted(df.steps.unique())]
    sns.lineplot(h.dropna(subset=["val/miou"]), x="step", y="val/miou", hue="budget", hue_order=order,
                 errorbar=None, units="seed", estimator=None, ax=axes[1], marker=".")
    axes[1].set(xlabel="step", ylabel="val mIoU (tile 4)", title="Val curves (one line per seed)")
    return _save(fig, out, f"{study.name}.png")


def budget_figure(study: StudyFile, recs: list[dict], out: Path, compare: list[dict] = ()) -> str:
    """mIoU against clicks per class (log axis), one curve per method (``compare``: runs of other studies drawn
    beside this one's, e.g. pfCE alone beside pfCE + gated CRF), the ceiling as a band."""
    df = frame(recs + [r for r in compare if r["config"]["points"]["supervision"] == "points"])
    pts = df[df.supervision == "points"]
    full = df[df.supervision == "full"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if not full.empty:
        lo, hi = seed_interval(full["test/miou"])
        m = full["test/miou"].mean()
        ax.axhspan(lo, hi, color="grey", alpha=0.25, label=f"full masks (n={len(full)})")
        ax.axhline(m, color="grey")
    if not pts.empty:
        sns.lineplot(pts, x="n_per_class", y="test/miou", hue="method", marker="o", errorbar=seed_interval,
                     ax=ax)
        ticks = sorted(pts.n_per_class.unique())
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xticks([], minor=True)
    ax.set(xlabel="clicks per class per image (log)", ylabel="test mIoU (tiles 5 + 8)",
           title="Points vs the fully supervised ceiling (bands: 95 % t-interval over seeds)")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, out, f"{study.name}.png")


def per_class_figure(study: StudyFile, recs: list[dict], out: Path) -> str:
    df = frame(recs)
    cols = [c for c in df.columns if c.startswith("test/iou/")]
    long = df.melt(id_vars=["cell", "seed"], value_vars=cols, var_name="class", value_name="IoU")
    long["class"] = long["class"].str.removeprefix("test/iou/")
    labels = {c.id: c.label for c in study.cells}
    long["cell"] = long["cell"].map(labels).fillna(long["cell"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    order = [c.id for c in study.cells if c.id in set(df.cell)]
    budget = df.groupby("cell").agg(points=("supervision", lambda v: v.iloc[0] == "points"), n=("n_per_class", "first"))
    if budget.loc[budget.points, "n"].nunique() > 1:  # a budget study: the ceiling, then the budgets in order
        order.sort(key=lambda c: (bool(budget.loc[c, "points"]), budget.loc[c, "n"]))
    sns.barplot(long, x="class", y="IoU", hue="cell", hue_order=[labels[c] for c in order], errorbar=seed_interval,
                ax=ax)
    ax.set(xlabel="", ylabel="test IoU", title="Test IoU per class (whiskers: 95 % t-interval over seeds)")
    ax.legend(title="", bbox_to_anchor=(1.01, 1), loc="upper left")
    return _save(fig, out, f"{study.name}-per-class.png")


def cells_figure(study: StudyFile, recs: list[dict], out: Path) -> str:
    """The study's metric per cell: one dot per seed and the mean with its 95 % t-interval over seeds."""
    df = frame(recs)
    labels = {c.id: wrap(c.label, 16) for c in study.cells}  # wrapped to the width of a cell's slot
    df["cell label"] = df.cell.map(labels).fillna(df.cell)
    order = [labels[c.id] for c in study.cells if c.id in set(df.cell)]
    name = {"test/miou": "test mIoU (tiles " + "+".join(Config().data.test_groups) + ")",
            "val/miou": "val mIoU (dense)"}
    widest = max(len(line) for label in order for line in label.split("\n"))  # a path is not broken: its slot widens
    fig, ax = plt.subplots(figsize=(max(5.0, max(1.7, 0.095 * widest) * len(order)), 3.6))
    sns.pointplot(df, x="cell label", y=study.metric, order=order, errorbar=seed_interval, linestyle="none",
                  capsize=0.15, color="0.2", ax=ax)
    np.random.seed(0)  # stripplot's jitter: each figure's own, not shifted by the figures drawn before it
    sns.stripplot(df, x="cell label", y=study.metric, order=order, hue="seed", palette="tab10", size=6, ax=ax)
    ax.set(xlabel="", ylabel=name.get(study.metric, study.metric),
           title=f"{study.name}: each seed (dots) and the mean with its 95 % t-interval")
    ax.legend(title="seed", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.tick_params(axis="x", labelsize=10)
    return _save(fig, out, f"{study.name}-cells.png")


def confusion_figure(study: StudyFile, recs: list[dict], out: Path) -> str:
    """Row-normalised test confusion matrix (all seeds and test images pooled) of the reference and of the
    cell compared with it last in the study file."""

    cells = [c for c in study.cells if any(r["cell"] == c.id for r in recs)]
    shown = [c for c in cells if c.id == study.reference] + [c for c in cells if c.id != study.reference][-1:]
    names = [k.removeprefix("test/iou/") for k in recs[0]["final"] if k.startswith("test/iou/")]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.4 * len(shown), 4.2), squeeze=False,
                             gridspec_kw={"wspace": 0.45})
    for ax, c in zip(axes[0], shown):
        mat = confusions(recs, c.id).sum(axis=(0, 1))
        norm = mat / np.maximum(mat.sum(1, keepdims=True), 1)
        sns.heatmap(norm, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax,
                    xticklabels=names, yticklabels=names)
        ax.tick_params(axis="y", rotation=0)  # rotated, the class names of neighbouring rows ran together
        ax.tick_params(axis="x", rotation=30)
        ax.set(title=wrap(c.label, 40), xlabel="predicted", ylabel="true")
    fig.suptitle("Test confusion (rows sum to 1; all seeds and test images)", y=1.02)
    return _save(fig, out, f"{study.name}-confusion.png")


def qualitative_figure(study: StudyFile, recs: list[dict], out: Path) -> str | None:
    """Image | truth | each cell's prediction | errors of the last cell, for the sample images the exports carry
    (pointseg/samples.py), all cells at one seed: the smallest seed every sampled cell has. None: no samples."""

    from pointseg.samples import decode
    from pointseg.viz import colorize, draw_points, error_map

    by = {(r["cell"], r["seed"]): r["samples"] for r in recs if r.get("samples")}
    cells = [c for c in study.cells if any(k[0] == c.id for k in by)]
    seeds = sorted({s for (_, s) in by if all((c.id, s) in by for c in cells)})
    if not cells or not seeds:
        return None
    seed, ref = seeds[0], by[(cells[0].id, seeds[0])]
    colors = [tuple(c) for c in ref["colors"]]
    points_cells = [c for c in cells if any(im.get("clicks") for im in by[(c.id, seed)]["images"])]
    rows = ref["images"]
    # the error map of the last cell that is not the ceiling (the method the study is about)
    shown = max(i for i, c in enumerate(cells) if c.id != study.raw.get("ceiling") or i == 0)
    aspect = max(decode(im["truth"]).shape[0] / decode(im["truth"]).shape[1] for im in rows)
    size = (2.3 * (len(cells) + 3), (2.3 * aspect + 0.3) * len(rows))
    fig, axes = plt.subplots(len(rows), len(cells) + 3, figsize=size,
                             squeeze=False, gridspec_kw={"hspace": 0.08, "wspace": 0.05})
    for i, im in enumerate(rows):
        clicks = next((x for c in points_cells for x in by[(c.id, seed)]["images"]
                       if x["name"] == im["name"] and x.get("clicks")), None)
        image, truth = decode(im["image"]), decode(im["truth"])
        if clicks is not None:
            image = draw_points(image, decode(clicks["clicks"]), colors, radius=1)
        preds = [decode(next(x for x in by[(c.id, seed)]["images"] if x["name"] == im["name"])["pred"])
                 for c in cells]
        tiles = [image, colorize(truth, colors), *(colorize(p, colors) for p in preds), error_map(preds[shown], truth)]
        titles = ["image" + (" + its clicks" if clicks else ""), "truth", *(c.label for c in cells),
                  f"errors: {cells[shown].label}"]
        for j, (ax, tile) in enumerate(zip(axes[i], tiles)):
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:  # wrapped to the panel's width: long cell labels overlapped their neighbours
                ax.set_title(wrap(titles[j], 24), fontsize=9)
        axes[i, 0].set_ylabel(f"{Path(im['name']).name}\n({im['split']}, tile {im['group']})", fontsize=8)
    handles = [Patch(color=np.asarray(c) / 255, label=n) for n, c in zip(ref["classes"], colors)]
    handles.append(Patch(facecolor=(0.86, 0.12, 0.12), label="wrong"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"Predictions of seed {seed} (thumbnails; black = no label); the train row shows the clicks "
                 "the points arm learned from", y=1.0, fontsize=10)
    return _save(fig, out, f"{study.name}-panel.png")


_DIAGNOSTICS = {"diag/unlabelled_acc": "student accuracy on unlabelled pixels",
                "diag/pseudo_precision": "pseudo-label precision", "diag/pseudo_coverage": "pseudo-label coverage"}


def diagnostics_figure(study: StudyFile, recs: list[dict], out: Path) -> str | None:
    """Per epoch, against the dense masks of the training crops (logged, never used to train or select): how
    right the student is on the pixels without a click, and how many of them a teacher labels and how well."""
    h = histories(recs)
    keys = [k for k in _DIAGNOSTICS if k in h.columns and h[k].notna().any()]
    if not keys:
        return None
    labels = {c.id: c.label for c in study.cells}
    h["method"] = h.cell.map(labels).fillna(h.cell)
    # one colour per method across the panels: a panel draws only the methods that logged its key
    palette = dict(zip(h.method.unique(), sns.color_palette(n_colors=h.method.nunique())))
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        data = h.dropna(subset=[k])
        # each seed as a thin line under the mean: with 3 seeds that disagree, a t-band spanned the whole 0-1 axis
        sns.lineplot(data, x="epoch", y=k, hue="method", palette=palette, units="seed", estimator=None,
                     lw=0.7, alpha=0.45, legend=False, ax=ax)
        sns.lineplot(data, x="epoch", y=k, hue="method", palette=palette, marker="o", errorbar=None, lw=2, ax=ax)
        ax.set(ylabel="", title=_DIAGNOSTICS[k], ylim=(0, 1))
        ax.legend(fontsize=8, title="")
    fig.suptitle("Diagnostics against the training crops' dense masks (bold: mean over seeds; thin: each seed)", y=1.03)
    return _save(fig, out, f"{study.name}-diagnostics.png")


def pseudo_classes_figure(study: StudyFile, recs: list[dict], out: Path) -> str | None:
    """Per run and epoch, which classes a teacher's pseudo-labels name (stacked shares), beside what all unclicked
    pixels of the training crops are: a seed mean would hide a teacher that names one class only, or another class
    on each seed. Drawn from the logged ``diag/pseudo_share/<class>`` (dense masks, a diagnostic, never used)."""
    runs = sorted((r for r in recs if any(k.startswith("diag/pseudo_share/") for row in r["history"] for k in row)),
                  key=lambda r: ([c.id for c in study.cells].index(r["cell"]), r["seed"]))
    if not runs:
        return None
    names = [k.removeprefix("diag/pseudo_share/") for k in runs[0]["history"][-1] if k.startswith("diag/pseudo_share/")]
    known = dict(zip(runs[0]["samples"]["classes"], runs[0]["samples"]["colors"])) if runs[0].get("samples") else {}
    colours = [np.asarray(known[n]) / 255 if n in known else c
               for n, c in zip(names, sns.color_palette(n_colors=len(names)))]
    labels = {c.id: c.label for c in study.cells}
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.4), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], runs):
        rows = [row for row in r["history"] if f"diag/pseudo_share/{names[0]}" in row]
        ticks = [str(row["epoch"]) for row in rows] + ["all\nunclicked"]
        x = [*range(len(rows)), len(rows) + 0.8]  # the reference bar stands apart from the epochs
        bars = [[row.get(f"diag/pseudo_share/{n}") or 0.0 for n in names] for row in rows]
        bars.append([rows[-1].get(f"diag/unlabelled_share/{n}") or 0.0 for n in names])
        bottom = np.zeros(len(bars))
        for i, (n, colour) in enumerate(zip(names, colours)):
            heights = np.array([b[i] for b in bars])
            ax.bar(x, heights, bottom=bottom, color=colour, edgecolor="white", linewidth=0.5, label=n)
            bottom += heights
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set(title=f"{labels.get(r['cell'], r['cell'])}, seed {r['seed']}", xlabel="epoch", ylim=(0, 1))
        ax.title.set_fontsize(9)
    axes[0, 0].set_ylabel("share of the pseudo-labels")
    handles, legend = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, legend, loc="lower center", ncol=len(names), frameon=False, bbox_to_anchor=(0.5, -0.2))
    fig.suptitle("Which classes the pseudo-labels name, per epoch; last bar: all unclicked pixels (training crops' "
                 "dense masks, never used)", y=1.02, fontsize=10)
    return _save(fig, out, f"{study.name}-pseudo-classes.png")


_AXIS = {"gamma": "focal γ", "semi_weight": "unlabelled-pixel weight", "n_per_class": "clicks per class per image"}


def curve_figure(study: StudyFile, recs: list[dict], out: Path) -> str:
    """The study's metric against the factor it varies (the study file's ``curve: {x: column, hue: column}``,
    columns of results.frame), one line per hue value, mean and 95 % t-interval over seeds. The factor's values are
    evenly spaced (γ 0 … 5 and weights 0 … 1 are no axis a reader reads distances on), labelled by their values."""
    spec = study.raw["curve"]
    df = frame(recs)
    x, hue = spec["x"], spec.get("hue")
    df[x] = df[x].map(lambda v: f"{v:g}")
    order = sorted(df[x].unique(), key=float)
    if hue:
        df[_AXIS.get(hue, hue)] = df[hue].map(lambda v: f"{v:g}")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.pointplot(df, x=x, y=study.metric, order=order, hue=_AXIS.get(hue, hue) if hue else None,
                  dodge=0.2 if hue else False, errorbar=seed_interval, capsize=0.1, markers="o", ax=ax)
    name = {"test/miou": "test mIoU (tiles " + "+".join(Config().data.test_groups) + ")"}
    ax.set(xlabel=_AXIS.get(x, x), ylabel=name.get(study.metric, study.metric),
           title=f"{study.name}: mean over seeds with its 95 % t-interval")
    if hue:
        ax.legend(title=_AXIS.get(hue, hue), loc="best", fontsize="small")
    return _save(fig, out, f"{study.name}-curve.png")


def schedule_curves_figure(study: StudyFile, recs: list[dict], out: Path) -> str | None:
    """Dense val mIoU (tile 4) against the training step, one line per cell (mean over its seeds), full masks and
    points in two panels: where a shorter schedule's curve meets the longer one's. A diagnostic for the points arm,
    which never selects on it."""
    h = histories(recs)
    if h.empty or "val/miou" not in h:
        return None
    sup = {r["cell"]: r["config"]["points"]["supervision"] for r in recs}
    label = {c.id: c.label for c in study.cells}
    h = h.dropna(subset=["val/miou"]).assign(supervision=lambda d: d.cell.map(sup), cell=lambda d: d.cell.map(label))
    panels = [s for s in ("full", "points") if (h.supervision == s).any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), layout="constrained", squeeze=False)
    for ax, s in zip(axes[0], panels):
        part = h[h.supervision == s]
        sns.lineplot(part, x="step", y="val/miou", hue="cell", errorbar=None, marker=".", ax=ax)
        ax.set(xlabel="training step", ylabel="val mIoU (tile 4, dense masks)",
               title=f"{'full masks' if s == 'full' else 'points (diagnostic only)'}: mean over seeds")
        ax.legend(fontsize="x-small", loc="lower right")
    return _save(fig, out, f"{study.name}-val-curves.png")


# the figures a study file may name (``report: {figures: [cells, per-class]}``), in the order it names them
FIGURES = {"convergence": convergence_figure, "budget": budget_figure, "per-class": per_class_figure,
           "confusion": confusion_figure, "cells": cells_figure, "curve": curve_figure,
           "diagnostics": diagnostics_figure, "qualitative": qualitative_figure,
           "pseudo-classes": pseudo_classes_figure, "schedule-curves": schedule_curves_figure}


def figures_of(study) -> list:
    """The figure functions a study draws: the names under ``report: figures`` (an unknown name is an error naming
    the file), else its curve and cells, or its cells."""

    names = study.report.get("figures") or (["curve", "cells"] if study.raw.get("curve") else ["cells"])
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        name = unknown[0]
        raise ConfigError(f"{study.path}: report: figures: no figure {name!r}{_suggest(name, list(FIGURES))}; "
                          f"there are {list(FIGURES)}")
    return [FIGURES[n] for n in names]
