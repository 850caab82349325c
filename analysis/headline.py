"""The report's headline, read from the exports of the study whose file says ``headline: true`` (the default
method's label-efficiency curve): the ceiling, the best point-supervised test mIoU with its paired ratio to the
ceiling, the smallest click budget whose ratio reaches 0.9, and whether the issue's bar is met."""

from __future__ import annotations

from .results import confusions, load_records, method_label, paired_on_shared_seeds, shared_seeds
from .stats import bootstrap_miou, interval

# the bar of the issue "Label efficiency that holds up": ratio ≥ 0.95 with the lower end of its 95 % interval
# ≥ 0.90, at ≤ 20 clicks per class per image, ≥ 3 seeds
BAR_RATIO, BAR_LOWER, BAR_CLICKS, BAR_SEEDS = 0.95, 0.90, 20, 3
ENOUGH = 0.9  # "the smallest budget that reaches 0.9 of the ceiling"
TITLE = "On the development tiles (5 and 8)"


def headline_rows(recs: list[dict], ceiling: str, order: list[str], n_boot: int = 2000) -> list[dict]:
    """One row per point-supervised cell with exports: clicks, method, seeds, test mIoU and the paired ratio to
    ``ceiling`` (on the seeds both have), in ``order``."""
    rows = []
    for cell in order:
        mine = [r for r in recs if r["cell"] == cell]
        if cell == ceiling or not mine or mine[0]["config"]["points"]["supervision"] == "full":
            continue
        r = paired_on_shared_seeds(recs, cell, ceiling, "ratio", n_boot)
        if r is None:
            continue
        est, lo, hi = bootstrap_miou(confusions(recs, cell), n_boot)
        rows.append({"cell": cell, "clicks": mine[0]["config"]["points"]["n_per_class"],
                     "method": method_label(mine[0]["config"]), "seeds": len(mine), "miou": (est, lo, hi),
                     "ratio": (r.estimate, r.lower, r.upper)})
    return rows


def study_headline(study, root) -> list[str]:
    """The headline of a study file (:class:`sweeps.studyfile.StudyFile`) with a ``ceiling``; none without one."""

    if not study.raw.get("ceiling"):
        return []
    md = headline_section(load_records(study.name, root), study.raw["ceiling"], [c.id for c in study.cells],
                          study.name)
    check = study.raw.get("ceiling_check")
    if md and check:
        md.insert(len(md) - 1, ceiling_check_line(load_records(check["study"], root), check["study"],
                                                  check["reference"], check["longer"]))
    for key, head in (("longer_points", "With both arms on the longer schedule"),
                      ("self_trained", "With one round of self-training"),
                      ("other_ratios", "Another points arm")):  # each entry names its own head
        others = study.raw.get(key) or []
        for other in [others] if isinstance(others, dict) else others:  # one mapping, or a list: a line each
            if md:
                md.insert(len(md) - 1, other_ratio_line(load_records(other["study"], root), other.get("head", head),
                                                        other["study"], other["points"], other["ceiling"],
                                                        other.get("seeds", BAR_SEEDS), other.get("note", ""),
                                                        other.get("bar", True)))
    return md


def ceiling_check_line(recs: list[dict], study: str, reference: str, longer: str) -> str:
    """How far the ceiling is from converged: the reference schedule's ceiling against a longer one's, paired."""
    d = paired_on_shared_seeds(recs, longer, reference, "diff")
    r = paired_on_shared_seeds(recs, reference, longer, "ratio")
    if d is None or r is None:
        return (f"* **Is the ceiling converged?** Not measured yet: `{study}` has no seed of both `{reference}` and "
                f"`{longer}` (`python -m sweeps experiments/studies/{study}.yaml`).")
    n = len(shared_seeds(recs, reference, longer))
    verdict = "Not quite" if d[1] > 0 else "Yes, as far as the test tiles tell" if d[1] <= 0 <= d[2] else "Yes"
    return (f"* **Is the ceiling converged?** {verdict}: the longer schedule `{longer}` of the study `{study}` "
            f"changes the test mIoU of the ceiling's schedule `{reference}` by {interval(*d[:3], signed=True)} "
            f"({n} seeds, paired), so against it every ratio above would be multiplied by {interval(*r[:3])}.")


def other_ratio_line(recs: list[dict], head: str, study: str, points: str, ceiling: str, min_seeds: int,
                     note: str = "", judge: bool = True) -> str:
    """A points ÷ full ratio measured in another study than the headline's (both arms on the longer schedule;
    a self-trained points arm), and whether it meets the bar. Shown from ``min_seeds`` shared seeds on, never
    from fewer."""
    n = len(shared_seeds(recs, points, ceiling))
    mine = next((x for x in recs if x["cell"] == points), None)
    what = f" ({method_label(mine['config'])})" if mine else ""
    head = f"* **{head}** (`{study}`: `{points}`{what} ÷ `{ceiling}`)"
    if n < min_seeds:
        return (f"{head}: not measured yet ({n} of {min_seeds} seeds of both; "
                f"`python -m sweeps experiments/studies/{study}.yaml`).")
    r = paired_on_shared_seeds(recs, points, ceiling, "ratio")
    met = r.estimate >= BAR_RATIO and r.lower >= BAR_LOWER and mine["config"]["points"]["n_per_class"] <= BAR_CLICKS
    judged = f"the bar: {'met' if met else 'not met'}" if judge else "not judged against the bar (one model per arm)"
    if judge and f"{r.estimate:.3f}" == f"{BAR_RATIO:.3f}":  # rounds to the bar: say on which side it falls
        judged += f" ({r.estimate:.4f} {'≥' if r.estimate >= BAR_RATIO else '<'} {BAR_RATIO:g})"
    return f"{head}: ÷ ceiling {interval(*r[:3])} ({n} seeds, paired{'; ' + note if note else ''}); {judged}."


def headline_section(recs: list[dict], ceiling: str, order: list[str], study: str) -> list[str]:
    rows = headline_rows(recs, ceiling, order)
    if not rows:
        return []
    iv = lambda t: interval(*t)  # noqa: E731
    name = lambda r: f"`{r['cell']}` ({r['method']}, {r['clicks']} clicks per class)"  # noqa: E731
    c_est, c_lo, c_hi = bootstrap_miou(confusions(recs, ceiling))
    within = [r for r in rows if r["clicks"] <= BAR_CLICKS]
    md = [f"## {TITLE}", "", "Every variant below was chosen or judged on these test images (section "
          "Limitations); the held-out numbers are in the Abstract and Results. "
          f"From the study `{study}` (test tiles 5 and 8, paired by seed and test image; the "
          "section of that study has the full table).", "",
          f"* **Ceiling** (`{ceiling}`, full masks): test mIoU {iv((c_est, c_lo, c_hi))}."]
    for label, pool in ((f"at ≤ {BAR_CLICKS} clicks per class", within), ("at any budget", rows)):
        if pool:
            best = max(pool, key=lambda r: r["miou"][0])
            md.append(f"* **Best point-supervised {label}**: {name(best)}, test mIoU {iv(best['miou'])}, "
                      f"÷ ceiling {iv(best['ratio'])}.")
    enough = [r for r in rows if r["ratio"][0] >= ENOUGH]
    sure = [r for r in rows if r["ratio"][1] >= ENOUGH]
    first = min(enough, key=lambda r: r["clicks"]) if enough else None
    md.append(f"* **Smallest budget reaching {ENOUGH:g} of the ceiling**: "
              + (f"{name(first)}, ÷ ceiling {iv(first['ratio'])}" if first else "none")
              + (f"; with the lower end of the interval at {ENOUGH:g} or above: "
                 + (name(min(sure, key=lambda r: r["clicks"])) if sure else "none") + "."))
    met = [r for r in within if r["ratio"][0] >= BAR_RATIO and r["ratio"][1] >= BAR_LOWER
           and r["seeds"] >= BAR_SEEDS]
    md += [f"* **The bar** (÷ ceiling ≥ {BAR_RATIO:g} with the lower end ≥ {BAR_LOWER:g}, at ≤ {BAR_CLICKS} clicks "
           f"per class, ≥ {BAR_SEEDS} seeds): " + ("met by " + ", ".join(name(r) for r in met) if met else
                                                   "not met") + ".", ""]
    return md


# Each framework part against the same runs without it (same seeds, clicks and test images), and where it is
# measured: (part, default, study, with, without). The numbers are read from the exports.
PARTS = [
    ("unlabelled pixels: gated CRF loss, weight 0.1", "on", "label-efficiency-crf", "crf-10", "pfce-10"),
    ("unlabelled pixels: consistency (EMA teacher, CutMix), weight 1, its clicks on the strong view (revised by "
     "the next row: study consistency-parts traced most of this loss to that view)", "off", "unlabelled",
     "consistency-1.0", "pfce"),
    ("unlabelled pixels: consistency, weight 1, its clicks on the weak view", "off", "consistency-parts",
     "consistency-1.0-weak", "pfce"),
    ("unlabelled pixels: consistency, weight 0.1, its clicks on the weak view", "off", "consistency-parts",
     "consistency-0.1-weak", "pfce"),
    ("unlabelled pixels: FixMatch, weight 1, its clicks on the weak view", "off", "fixmatch-parts",
     "fixmatch-1.0-weak", "pfce"),
    ("unlabelled pixels: mean teacher, weight 1, its clicks on the weak view", "off",
     "mean-teacher-weak", "mean-teacher-1.0-weak", "pfce"),
    ("unlabelled pixels: one round of self-training (threshold 0.9), against its teacher", "off", "self-training",
     "st-20", "teacher"),
    ("unlabelled pixels: one round of class-balanced self-training (half of each class, bars ≤ 0.9), against its "
     "teacher", "off", "self-training", "st-20-cb", "teacher"),
    ("ImageNet-pretrained encoder", "on", "pretraining", "imagenet", "random"),
    ("D4 test-time augmentation", "off", "test-time", "tta", "plain"),
    ("ensemble of the 3 seeds' models", "off", "test-time", "ensemble", "plain"),
    ("histogram matching per test tile", "off", "test-time", "matched", "plain"),
    ("histogram matching per tile, on recoloured test tiles", "off", "test-time", "colour-matched", "colour"),
    ("label-shift correction to the training images' class mix (calibrated EM), 20 clicks", "off", "label-shift",
     "crf-20-prior-train", "crf-20"),
    ("D4 test-time augmentation, on the ceiling (full masks, 3200 steps)", "off", "test-time-ratio", "full-3200-tta",
     "full-3200"),
    ("D4 test-time augmentation, on two rounds of self-training (20 clicks)", "off", "test-time-ratio",
     "st-cb-2-tta", "st-cb-2"),
    ("ensemble of the 3 seeds' models, on the ceiling (full masks, 3200 steps)", "off", "test-time-ratio",
     "full-3200-ensemble", "full-3200"),
    ("ensemble of the 3 seeds' models, on two rounds of self-training (20 clicks)", "off", "test-time-ratio",
     "st-cb-2-ensemble", "st-cb-2"),
]


def parts_rows(root, n_boot: int = 2000) -> list[dict]:
    """One row per framework part: its paired test-mIoU gain with the 95 % interval, or why there is none."""

    rows = []
    for part, default, study, with_, without in PARTS:
        recs = load_records(study, root)
        d = paired_on_shared_seeds(recs, with_, without, "diff", n_boot)
        row = {"part": part, "default": default, "compared": f"`{study}`: `{with_}` − `{without}`",
               "seeds": len(shared_seeds(recs, with_, without))}
        if d is not None:
            row["gain"] = interval(*d[:3], signed=True)
        else:
            row["gain"] = f"not run yet (`python -m sweeps experiments/studies/{study}.yaml`)"
        rows.append(row)
    return rows


def parts_section(root) -> list[str]:
    rows = parts_rows(root)
    md = ["## Each framework part", "", "Test mIoU with the part minus without it, paired by seed and test image "
          "(95 % bootstrap interval); \"default\" says whether `experiments/points.yaml` uses it.", "",
          "| part | default | compared | seeds | gain [95 %] |", "|---|---|---|---|---|"]
    md += [f"| {r['part']} | {r['default']} | {r['compared']} | {r['seeds']} | {r['gain']} |" for r in rows]
    return md + [""]
