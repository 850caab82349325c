"""Small statistics for reports: mean with a t-based 95 % confidence interval, paired differences."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """(mean, half-width of the CI, n); the half-width is NaN with fewer than 2 values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    if v.size < 2:
        return float(v.mean()), float("nan"), 1
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half), int(v.size)


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the t-interval that mean_ci gives, as seaborn's ``errorbar=`` takes it: the figures draw the
    tables' interval over seeds. (Seaborn's own ``("ci", 95)`` bootstraps the seeds; with 3 seeds that is about
    their min–max, narrower than the t-interval.) One value: a point."""
    m, half, n = mean_ci(values, level)
    return (m, m) if n < 2 else (m - half, m + half)


def fmt(mean: float, half: float, n: int, digits: int = 3) -> str:
    if n == 0:
        return "—"
    if not math.isfinite(half):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {half:.{digits}f} (n={n})"


def interval(estimate: float, lower: float, upper: float, signed: bool = False) -> str:
    """``0.620 [0.573, 0.649]``, or ``+0.068 [+0.036, +0.102]`` for a difference (``signed``): every table and
    verdict writes an estimate with its interval this one way."""
    f = "+.3f" if signed else ".3f"
    return f"{estimate:{f}} [{lower:{f}}, {upper:{f}}]"


def miou_of(mats: np.ndarray) -> np.ndarray:
    """Macro mIoU of confusion matrices …×C×C (rows = truth); classes absent from truth and prediction are skipped."""
    mats = np.asarray(mats, float)
    tp = np.diagonal(mats, axis1=-2, axis2=-1)
    union = mats.sum(-1) + mats.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return np.nanmean(iou, axis=-1)


def _resampled_miou(cms: np.ndarray, seed_idx: np.ndarray, img_w: np.ndarray) -> np.ndarray:
    """B bootstrap draws of the mean over seeds of each seed's split mIoU: seeds drawn by ``seed_idx`` (B×S),
    images weighted by how often each was drawn (``img_w``, B×I)."""
    per_seed = np.einsum("bi,bsicd->bscd", img_w, cms[seed_idx])
    return miou_of(per_seed).mean(axis=1)


def _draws(n_seeds: int, n_images: int, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    seed_idx = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    img_w = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_boot).astype(float)
    return seed_idx, img_w


def bootstrap_miou(cms, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean over seeds of test mIoU, lower, upper) with a two-level bootstrap: seeds and test images are both
    resampled with replacement, so the interval covers the seed-to-seed spread and which images happen to be
    tested. ``cms``: seeds × images × C × C confusion matrices (the same images, in the same order, per seed)."""
    cms = np.asarray(cms, float)
    point = float(miou_of(cms.sum(axis=1)).mean())
    seed_idx, img_w = _draws(cms.shape[0], cms.shape[1], n_boot, np.random.default_rng(seed))
    b = _resampled_miou(cms, seed_idx, img_w)
    lo, hi = np.quantile(b, [(1 - level) / 2, (1 + level) / 2])
    return point, float(lo), float(hi)


class Paired(NamedTuple):
    estimate: float
    lower: float
    upper: float
    p: float  # two-sided bootstrap p-value of "no difference" (ratio 1 or difference 0)


def bootstrap_paired(cms_a, cms_b, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     how: str = "ratio") -> Paired:
    """Paired comparison of two arms run on the same seeds (seed k of a with seed k of b: same points, same crops)
    and tested on the same images: ``ratio`` = mIoU(a) ÷ mIoU(b) or ``diff`` = mIoU(a) − mIoU(b), each draw
    resampling the same seeds and images for both arms."""
    a, b = np.asarray(cms_a, float), np.asarray(cms_b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same seeds × images × classes, got {a.shape} and {b.shape}")
    op = {"ratio": np.divide, "diff": np.subtract}[how]
    point = float(op(miou_of(a.sum(axis=1)).mean(), miou_of(b.sum(axis=1)).mean()))
    seed_idx, img_w = _draws(a.shape[0], a.shape[1], n_boot, np.random.default_rng(seed))
    d = op(_resampled_miou(a, seed_idx, img_w), _resampled_miou(b, seed_idx, img_w))
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    null = 1.0 if how == "ratio" else 0.0
    p = min(1.0, 2 * min((d <= null).mean(), (d >= null).mean()))
    return Paired(point, float(lo), float(hi), float(p))


def bootstrap_pooled(folds_a: Sequence, folds_b: Sequence, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     how: str = "ratio") -> Paired:
    """Two arms pooled over folds (cross-validation: each fold its own test images), paired within each fold
    (same seeds, same images): ``ratio`` = mean over folds of arm a's fold mIoU ÷ the same of arm b, or ``diff``.
    A fold's mIoU is the mean over its seeds of the mIoU of its images' summed confusion (as in
    :func:`bootstrap_paired`). Each draw resamples the folds with replacement and, within each drawn fold, its seeds
    and test images, the same draws for both arms, so the interval covers which tiles happen to be held out as
    well as seeds and images. ``folds_a[f]``, ``folds_b[f]``: seeds × images × C × C of fold f."""
    if len(folds_a) != len(folds_b) or not folds_a:
        raise ValueError(f"pooled arms need the same folds, got {len(folds_a)} and {len(folds_b)}")
    op = {"ratio": np.divide, "diff": np.subtract}[how]
    rng = np.random.default_rng(seed)
    per_a, per_b, point_a, point_b = [], [], [], []
    for fa, fb in zip(folds_a, folds_b):
        a, b = np.asarray(fa, float), np.asarray(fb, float)
        if a.shape != b.shape:
            raise ValueError(f"paired arms need the same seeds × images × classes in a fold, got {a.shape} and "
                             f"{b.shape}")
        point_a.append(miou_of(a.sum(axis=1)).mean())
        point_b.append(miou_of(b.sum(axis=1)).mean())
        seed_idx, img_w = _draws(a.shape[0], a.shape[1], n_boot, rng)
        per_a.append(_resampled_miou(a, seed_idx, img_w))
        per_b.append(_resampled_miou(b, seed_idx, img_w))
    per_a, per_b = np.stack(per_a, 1), np.stack(per_b, 1)  # draws × folds
    folds = rng.integers(0, per_a.shape[1], size=per_a.shape)  # draws × folds, with replacement
    rows = np.arange(per_a.shape[0])[:, None]
    d = op(per_a[rows, folds].mean(1), per_b[rows, folds].mean(1))
    point = float(op(np.mean(point_a), np.mean(point_b)))
    lo, hi = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    null = 1.0 if how == "ratio" else 0.0
    p = min(1.0, 2 * min((d <= null).mean(), (d >= null).mean()))
    return Paired(point, float(lo), float(hi), float(p))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the t-interval of ``values`` (e.g. one ratio per fold); NaN bounds with one value."""
    m, half, _ = mean_ci(values, level)
    return m, m - half, m + half


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adj[i] = running
    return adj.tolist()
