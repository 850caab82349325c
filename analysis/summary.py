"""The report's first page: the abstract, the one results table, the ablation ladder and the compute each method
costs, read from the exports of several studies (``study/cell`` names a cell of another study). Reads only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import json

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch

from sweeps.studyfile import StudyFile  # noqa: E402

from .figures import _save  # noqa: E402
from .heldout import (
    common_folds,
    fold_table,
    per_class_table,
    pooled,  # noqa: E402
)
from .results import RESULTS, confusions, frame, load_records, paired_on_shared_seeds  # noqa: E402
from .stats import bootstrap_miou, interval, seed_interval  # noqa: E402

HELDOUT, ROADS = "heldout-tiles", "heldout-roads"
# the parts of `make best`, one at a time, on the development split (test tiles 5 and 8, seeds 0-2, paired)
LADDER = [("pfCE, 20 class-balanced clicks", "label-efficiency-crf/pfce-20"),
          ("+ gated CRF on the unlabelled pixels", "label-efficiency-crf/crf-20"),
          ("+ mixed clicks (the make-best teacher)", "placement-crf/mixed-20"),
          ("+ class-balanced self-training (make best)", "self-training-mixed/st-mixed")]
LADDER_CEILING = "self-training-mixed/full-3200"
# the development estimate of `make best` (seeds 0-2 and 3-5 of the same pipeline, one ceiling each)
DEV_BEST = {"best": ["self-training-mixed/st-mixed", "best-seeds/st-mixed"],
            "teacher": ["self-training-mixed/teacher", "best-seeds/teacher"],
            "full": ["self-training-mixed/full-3200", "best-seeds/full-3200"]}
ARM_NAMES = {"default": "default (`make demo`)", "teacher": "the make-best teacher", "best": "`make best`",
             "full": "full masks, 3200 steps (ceiling)"}


def combined(specs: list[str], root: Path = RESULTS, as_cell: str | None = None) -> list[dict]:
    """The exports of cells of several studies in one list; each record's ``cell`` is its ``study/cell`` (or
    ``as_cell``: seeds of one pipeline spread over two studies, pooled as one cell)."""
    out = []
    for spec in specs:
        study, cell = spec.split("/", 1)
        out += [{**r, "cell": as_cell or spec} for r in load_records(study, root) if r["cell"] == cell]
    return out


def ladder_rows(root: Path = RESULTS) -> list[dict]:
    """Each rung: its test mIoU, its gain over the rung below (paired) and its ratio to the ceiling (paired)."""
    recs = combined([c for _, c in LADDER] + [LADDER_CEILING], root)
    have = {r["cell"] for r in recs}
    rows, below = [], None
    for label, cell in LADDER:
        if cell not in have or LADDER_CEILING not in have:
            below = None
            continue
        est = bootstrap_miou(confusions(recs, cell))
        gain = paired_on_shared_seeds(recs, cell, below, "diff") if below else None
        rows.append({"label": label, "cell": cell, "miou": est, "gain": gain,
                     "ratio": paired_on_shared_seeds(recs, cell, LADDER_CEILING, "ratio")})
        below = cell
    if rows:
        rows.append({"label": "full masks, 3200 steps", "cell": LADDER_CEILING,
                     "miou": bootstrap_miou(confusions(recs, LADDER_CEILING)), "gain": None, "ratio": None})
    return rows


def heldout_rows(root: Path = RESULTS, studies_dir: Path = Path("experiments/studies")) -> list[dict]:
    """The held-out tiles' arms pooled over the folds that finished: mean fold mIoU and ratio to the ceiling."""
    path = studies_dir / f"{HELDOUT}.yaml"
    if not path.exists():
        return []
    study = StudyFile.load(path)
    rows = []
    for arm in ("default", "teacher", "best"):
        p = pooled(study, arm, root=root)
        if p["folds"]:
            rows.append({"label": ARM_NAMES[arm], "arm": arm, "ratio": p["bootstrap"], "folds": p["folds"],
                         "of": p["of"], "seeds": p["seeds"]})
    return rows


def ladder_figure(dev: list[dict], held: list[dict], out: Path) -> str | None:
    """Each part's test mIoU with its 95 % interval against the ceiling's band: the development tiles on the left,
    the held-out tiles (ratio to each fold's own ceiling, pooled) on the right."""
    if not dev:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained", width_ratios=[3, 2])
    ax = axes[0]
    rungs = [r for r in dev if r["ratio"] is not None]
    ceil = dev[-1]["miou"]
    ax.axvspan(ceil[1], ceil[2], color="0.85", label="full masks, 3200 steps (95 %)")
    ax.axvline(ceil[0], color="0.4", lw=1)
    y = np.arange(len(rungs))[::-1]
    for yi, r in zip(y, rungs):
        est, lo, hi = r["miou"]
        ax.errorbar(est, yi, xerr=[[est - lo], [hi - est]], fmt="o", color="C0", capsize=3)
        ax.annotate(f"÷ ceiling {r['ratio'].estimate:.3f}", (hi, yi), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_yticks(y, [r["label"] for r in rungs], fontsize=9)
    ax.set(xlabel="test mIoU, tiles 5 + 8 (seeds 0-2)", title="Development tiles: each part added in turn")
    ax.set_xlim(min(r["miou"][1] for r in rungs) - 0.01, ceil[2] + 0.08)
    ax.set_ylim(-0.6, len(rungs) - 0.4)
    ax.legend(loc="upper right", fontsize=8)  # above the last rung's point, right of the first rung's label
    ax = axes[1]
    if held:
        y = np.arange(len(held))[::-1]
        for yi, r in zip(y, held):
            est, lo, hi = r["ratio"][:3]
            ax.errorbar(est, yi, xerr=[[est - lo], [hi - est]], fmt="o", color="C1", capsize=3)
        ax.set_yticks(y, [f"{r['label']} ({len(r['folds'])} of {r['of']} folds)" for r in held], fontsize=9)
        ax.axvline(1.0, color="0.4", lw=1)
        ax.axvspan(0.95, 1.0, color="C2", alpha=0.12, label="the goal, ≥ 0.95 of the ceiling")
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "held-out folds pending", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set(xlabel="÷ ceiling of the same fold (pooled, 95 %)", title="Held-out tiles 1-4, 6, 7")
    return _save(fig, out, "ladder.png")


def _dev_ratio(arm: str, root: Path):
    """``arm`` ÷ the 3200-step ceiling on the development tiles over seeds 0-5 (two studies, one pipeline)."""
    recs = combined(DEV_BEST[arm], root, as_cell=arm) + combined(DEV_BEST["full"], root, as_cell="full")
    if not recs or arm not in {r["cell"] for r in recs} or "full" not in {r["cell"] for r in recs}:
        return None, None
    return bootstrap_miou(confusions(recs, arm)), paired_on_shared_seeds(recs, arm, "full", "ratio")


def _roads(arm: str, root: Path):
    recs = load_records(ROADS, root)
    cells = {r["cell"] for r in recs}
    if arm not in cells or "full" not in cells:
        return None
    mine = [r for r in recs if r["cell"] == arm]
    road = np.mean([r["final"].get("test/iou/road", np.nan) for r in mine])
    return {"miou": bootstrap_miou(confusions(recs, arm)), "seeds": len(mine), "road": road,
            "ratio": paired_on_shared_seeds(recs, arm, "full", "ratio") if arm != "full" else None}


def results_table(root: Path = RESULTS, studies_dir: Path = Path("experiments/studies")) -> list[str]:
    held = {r["arm"]: r for r in heldout_rows(root, studies_dir)}
    study = StudyFile.load(studies_dir / f"{HELDOUT}.yaml") if (studies_dir / f"{HELDOUT}.yaml").exists() else None
    n_folds = len(study.folds()) if study else 0
    lines = ["| recipe | development tiles 5 + 8: mIoU, ÷ ceiling (seeds 0-5) | held-out tiles: ÷ ceiling, pooled "
             "over folds | Massachusetts roads: mIoU, ÷ ceiling, road IoU |", "|---|---|---|---|"]
    for arm in ("default", "teacher", "best", "full"):
        dev = "—"
        if arm in DEV_BEST:
            m, r = _dev_ratio(arm, root)
            dev = "—" if m is None else interval(*m) + ("" if arm == "full" else f"; {interval(*r[:3])}")
        h = held.get(arm)
        hcell = ("1 (each fold's own)" if arm == "full" else
                 f"{interval(*h['ratio'][:3])} ({len(h['folds'])} of {n_folds} folds"
                 + (")" if len(h['folds']) == n_folds else ", pending)") if h else "pending")
        rd = _roads(arm, root)
        rcell = ("pending" if rd is None else f"{interval(*rd['miou'])}"
                 + (f"; {interval(*rd['ratio'][:3])}" if rd["ratio"] else "") + f"; road {rd['road']:.3f} "
                 f"({rd['seeds']} seed{'s' if rd['seeds'] != 1 else ''})")
        lines.append(f"| {ARM_NAMES[arm]} | {dev} | {hcell} | {rcell} |")
    return lines + ["", "The development column was selected on: every default and the recipe were chosen on "
                    "those test images (section Limitations). The default method has no development row of its own "
                    "(it was measured at 10 clicks on the 1600-step schedule, study `label-efficiency-crf`)."]


def abstract(root: Path = RESULTS, studies_dir: Path = Path("experiments/studies")) -> list[str]:
    held = {r["arm"]: r for r in heldout_rows(root, studies_dir)}
    _, dev = _dev_ratio("best", root)
    text = ("pointseg trains a U-Net (EfficientNet-Lite0 encoder, ImageNet weights) from a few simulated clicks "
            "per class and image with a partial focal cross-entropy, adds a gated CRF loss on the unlabelled "
            "pixels and, in its recommended recipe (`make best`), one round of class-balanced self-training. ")
    if dev is not None:
        text += ("On the two Dubai tiles every choice was made on, that recipe reaches "
                 f"{interval(*dev[:3])} of a full-mask ceiling trained as long (six seeds, paired), a number "
                 "selected on those images. ")
    b = held.get("best")
    if b and len(b["folds"]) == b["of"]:
        met = b["ratio"].estimate >= 0.95 and b["ratio"].lower >= 0.90
        lo, hi = min(b["seeds"]), max(b["seeds"])
        seeds = "one seed per fold" if hi == 1 else f"{lo}{'' if lo == hi else f'-{hi}'} seeds per fold"
        text += (f"On the six tiles that chose nothing, each held out in turn, it reaches {interval(*b['ratio'][:3])} "
                 f"of each fold's ceiling (pooled over folds, seeds and images; {seeds}): the goal of 0.95 with the "
                 f"lower end at 0.90 is {'met' if met else 'not met'}. ")
        d = held.get("default")
        t = held.get("teacher")
        if t and len(t["folds"]) == t["of"]:
            text += f"Its first stage alone (the teacher) reaches {interval(*t['ratio'][:3])}. "
        if d and len(d["folds"]) == d["of"]:
            text += f"The default method (`make demo`) reaches {interval(*d['ratio'][:3])} there. "
    elif b:
        text += (f"On the tiles that chose nothing the held-out study has {len(b['folds'])} of {b['of']} folds so far "
                 f"({interval(*b['ratio'][:3])} of the ceiling over those): the held-out claim is pending. ")
    else:
        text += "The held-out study (six tiles that chose nothing) has no finished fold yet: the claim is pending. "
    rd = _roads("best", root)
    if rd is not None and rd["ratio"] is not None:
        n, full = rd["seeds"], _roads("full", root)
        text += (f"On Massachusetts roads, a data set nobody tuned on, it reaches {interval(*rd['ratio'][:3])} "
                 f"of full masks ({n} seed{'s' if n != 1 else ''}, paired over the test images), road IoU "
                 f"{rd['road']:.3f} against {full['road']:.3f}. ")
    else:
        rdd = _roads("default", root)
        if rdd is not None and rdd["ratio"] is not None:
            text += (f"On Massachusetts roads, a data set nobody tuned on, the default method reaches "
                     f"{interval(*rdd['ratio'][:3])} of full masks (the seeds both have); `make best` there is "
                     "pending. ")
        else:
            text += "The second data set (Massachusetts roads) is pending. "
    plateau = load_records("convergence-plateau", root)
    if "full-6400" in {r["cell"] for r in plateau} and "full-3200" in {r["cell"] for r in plateau}:
        g = paired_on_shared_seeds(plateau, "full-6400", "full-3200", "diff")
        n = len({r["seed"] for r in plateau if r["cell"] == "full-6400"})
        text += (f"Everything ran on a 2-core CPU; the ceiling is 3200 steps, and doubling them changed it by "
                 f"{interval(*g[:3], signed=True)} on the development tiles ({n} seed{'s' if n != 1 else ''}, "
                 "study convergence-plateau).")
    else:
        text += ("Everything ran on a 2-core CPU; the ceiling is 3200 steps, short of its plateau (study "
                 "convergence-plateau).")
    return ["## Abstract", "", text, ""]


def compute_rows(root: Path = RESULTS) -> list[str]:
    """Training minutes per method from the held-out runs of seed 0: one machine, one thread per run, two runs side
    by side; `make best` is its teacher plus its student. Seed 1 ran beside benchmarks and the test suite, and was
    paused (SIGSTOP) while the predict bench ran, so its wall-clock minutes are not a method's cost."""
    recs = [r for r in load_records(HELDOUT, root) if r["seed"] == 0]
    if not recs:
        return []
    by_arm: dict[str, list[float]] = {}
    cpus = set()
    for r in recs:
        arm = r["cell"].split("-", 1)[1]
        by_arm.setdefault(arm, []).append(r["final"]["train/seconds"] / 60)
        m = r.get("machine") or {}
        cpus.add(f"{m.get('cpu_model', '?')}, {m.get('threads', '?')} thread(s) per run")
    mean = {a: float(np.mean(v)) for a, v in by_arm.items()}
    lines = [f"Training minutes per run, mean over the held-out runs of seed 0 ({'; '.join(sorted(cpus))}; two "
             "runs side by side on 2 cores; seed 1 shared the machine with benchmarks and was paused for them):", "",
             "| method | steps | train min (runs) |", "|---|---|---|"]
    for arm, steps in (("default", "1080, two encoder levels frozen"), ("teacher", "1600"), ("full", "3200")):
        if arm in mean:
            lines.append(f"| {ARM_NAMES[arm]} | {steps} | {mean[arm]:.1f} ({len(by_arm[arm])}) |")
    if "best" in mean and "teacher" in mean:
        lines.append(f"| `make best` (teacher + student) | 1600 + 1600 | {mean['teacher'] + mean['best']:.1f} "
                     f"({len(by_arm['best'])}) |")
    return lines + [""]


def efficiency_figure(root: Path, out: Path) -> str | None:
    """Test mIoU against clicks per class on the development tiles: pfCE alone and with the gated CRF (study
    label-efficiency-crf), the `make best` teacher and recipe at 20 clicks (seeds 0-5), the ceilings as bands."""
    recs = load_records("label-efficiency-crf", root)
    if not recs:
        return None

    df = frame(recs)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for method, label, colour in (("pfCE", "pfCE alone", "C0"), ("pfCE + gated CRF (0.1)", "pfCE + gated CRF", "C1")):
        d = df[(df.supervision == "points") & (df.method == method)].groupby("n_per_class")["test/miou"]
        if d.ngroups:
            lo_hi = np.array([seed_interval(v.tolist()) for _, v in d])
            ax.errorbar(d.mean().index, d.mean().values, yerr=[d.mean().values - lo_hi[:, 0],
                        lo_hi[:, 1] - d.mean().values], marker="o", capsize=3, color=colour, label=label)
    for arm, marker, colour, dx in (("teacher", "s", "C2", 1.09), ("best", "*", "C3", 1.19)):
        m, _ = _dev_ratio(arm, root)
        if m is not None:  # set a little right of 20, beside the curve's own point at 20 clicks
            ax.errorbar([20 * dx], [m[0]], yerr=[[m[0] - m[1]], [m[2] - m[0]]], marker=marker, ms=10 if arm == "best"
                        else 6, capsize=3, color=colour, ls="none", label=ARM_NAMES[arm].replace("`", "") +
                        " (20 clicks, seeds 0-5)")
    full = df[df.supervision == "full"]["test/miou"]
    if len(full):
        ax.axhspan(*seed_interval(full.tolist()), color="0.88", label="full masks, 1600 steps")
    m, _ = _dev_ratio("full", root)
    if m is not None:
        ax.axhspan(m[1], m[2], color="0.6", alpha=0.35, label="full masks, 3200 steps")
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 5, 10, 20, 50], ["1", "2", "5", "10", "20", "50"])
    ax.set_xticks([], minor=True)
    ax.set(xlabel="clicks per class present, per image (log)", ylabel="test mIoU, tiles 5 + 8",
           title="Label efficiency on the development tiles (95 % intervals)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out, "label-efficiency-recipe.png")


def maps_figure(root: Path, out: Path) -> str | None:
    """Image | truth | the default | `make best` | the ceiling, on a centre crop of each held-out fold's first test
    image at full resolution (written by ``python -m sweeps.maps``), with a class legend."""

    from PIL import Image

    folder = root / HELDOUT / "maps"
    if not (folder / "maps.json").exists():
        return None
    index = json.loads((folder / "maps.json").read_text())
    rows = sorted(index, key=int)
    cols = [("image", "image.jpg"), ("truth", "truth.png"), ("default (make demo)", "default.png"),
            ("make best", "best.png"), ("full masks (ceiling)", "full.png")]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.4 * len(cols), 2.5 * len(rows)), squeeze=False,
                             gridspec_kw={"hspace": 0.12, "wspace": 0.04})
    for i, fold in enumerate(rows):
        for j, (title, suffix) in enumerate(cols):
            ax = axes[i, j]
            img = Image.open(folder / f"t{fold}-{suffix}")
            ax.imshow(np.asarray(img.convert("RGB")), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=9)
        info = index[fold]
        axes[i, 0].set_ylabel(f"tile {fold}: {Path(info['image']).name}\ncentre {info['size']} px, seed "
                              f"{info['seed']}", fontsize=8)
    info = index[rows[0]]
    handles = [Patch(color=np.asarray(c) / 255, label=n) for n, c in zip(info["classes"], info["colors"])]
    handles.append(Patch(color="black", label="no label"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.03))
    fig.suptitle("Held-out tiles: each fold's first test image, centre crop at full resolution (not picked)",
                 fontsize=10)
    return _save(fig, out, "heldout-maps.png")


def summary_section(out: Path, root: Path = RESULTS, studies_dir: Path = Path("experiments/studies")) -> list[str]:
    md = abstract(root, studies_dir)
    md += ["## Results", ""] + results_table(root, studies_dir) + [""]
    dev, held = ladder_rows(root), heldout_rows(root, studies_dir)
    name = ladder_figure(dev, held, out)
    if name:
        md += [f"![ladder]({name})", "", "| part | test mIoU [95 %] | gain over the line above | ÷ ceiling |",
               "|---|---|---|---|"]
        md += [f"| {r['label']} | {interval(*r['miou'])} | "
               f"{interval(*r['gain'][:3], signed=True) if r['gain'] else '—'} | "
               f"{interval(*r['ratio'][:3]) if r['ratio'] else '—'} |" for r in dev]
        md += ["", "Development tiles, seeds 0-2, paired by seed and test image; each part was chosen on these "
               "images, so each gain is an upper estimate.", ""]
    eff = efficiency_figure(root, out)
    if eff:
        md += [f"![label efficiency]({eff})", "", "How the test mIoU grows with the clicks (the recommended recipe at "
               "20 clicks, beside the default method's curve): development tiles, intervals over seeds.", ""]
    path = studies_dir / f"{HELDOUT}.yaml"
    if path.exists():
        study = StudyFile.load(path)
        md += ["### Per held-out tile and per class", "", fold_table(study, root).to_markdown(index=False), "",
               f"Test IoU per class over the held-out tiles every arm finished "
               f"({', '.join(common_folds(study, root)) or 'none yet'}):", "",
               per_class_table(study, root).to_markdown(index=False), "",
               f"Each fold's own numbers and the pooled ratios with their intervals: [the study's page]"
               f"(studies/{HELDOUT}.md).", ""]
    maps = maps_figure(root, out)
    if maps:
        md += [f"![held-out maps]({maps})", ""]
    md += ["## Compute", ""] + (compute_rows(root) or ["No held-out run has finished yet.", ""])
    return md
