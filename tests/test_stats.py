"""The intervals every verdict rests on: two-level bootstrap over seeds and test images, paired arms, Holm."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.stats import bootstrap_miou, bootstrap_paired, holm, miou_of
from pointseg.metrics import ConfusionMatrix


def _cms(rng, seeds=3, images=6, c=4, diag=200):
    return rng.integers(0, 50, (seeds, images, c, c)).astype(float) + np.eye(c) * diag


def test_miou_of_equals_the_metric_the_trainer_reports():
    rng = np.random.default_rng(1)
    pred, truth = rng.integers(0, 4, 5000), rng.integers(0, 4, 5000)
    truth[:100] = 255
    cm = ConfusionMatrix(4)
    cm.update(pred, truth)
    assert miou_of(cm.mat.numpy()) == pytest.approx(cm.compute()["miou"])
    absent = np.zeros((3, 3))
    absent[0, 0], absent[1, 1] = 5, 5  # class 2 in neither truth nor prediction: left out, not counted as 0
    assert miou_of(absent) == 1.0


def test_bootstrap_interval_holds_the_estimate_and_collapses_without_spread():
    rng = np.random.default_rng(0)
    cms = _cms(rng)
    est, lo, hi = bootstrap_miou(cms, n_boot=500)
    assert lo <= est <= hi and hi - lo > 0
    assert est == pytest.approx(np.mean([miou_of(s.sum(0)) for s in cms]))
    same = np.repeat(cms[:1, :1], 3, axis=0)  # one image, identical seeds: nothing to resample
    est, lo, hi = bootstrap_miou(same, n_boot=200)
    assert lo == pytest.approx(est) and hi == pytest.approx(est)


def test_paired_comparison_of_an_arm_with_itself_is_exactly_no_difference():
    cms = _cms(np.random.default_rng(2))
    r = bootstrap_paired(cms, cms, n_boot=300)
    assert (r.estimate, r.lower, r.upper, r.p) == (1.0, 1.0, 1.0, 1.0)
    d = bootstrap_paired(cms, cms, n_boot=300, how="diff")
    assert (d.estimate, d.lower, d.upper) == (0.0, 0.0, 0.0)


def test_paired_comparison_sees_a_consistent_gain_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(3)
    base = _cms(rng, seeds=3, images=8, diag=0) + np.eye(4) * rng.integers(50, 400, (3, 8, 1, 1))  # noisy images
    better = base + np.eye(4) * 20  # every image of every seed a little better
    d = bootstrap_paired(better, base, n_boot=1000, how="diff")
    assert d.lower > 0 and d.p < 0.01
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap_paired(better[:2], base)


def test_holm_adjusts_in_rank_order_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_pooled_over_folds_is_the_ratio_of_fold_means_and_its_interval_covers_which_folds_are_held_out():
    from analysis.stats import bootstrap_pooled

    rng = np.random.default_rng(4)
    folds_b = [_cms(rng, seeds=1, images=9, diag=d) for d in (100, 300, 600)]  # folds of very different ease
    folds_a = [f * np.where(np.eye(4, dtype=bool), 0.9, 1.0) for f in folds_b]  # a little worse everywhere
    r = bootstrap_pooled(folds_a, folds_b, n_boot=800)
    want = np.mean([miou_of(f.sum(1)).mean() for f in folds_a]) / np.mean([miou_of(f.sum(1)).mean() for f in folds_b])
    assert r.estimate == pytest.approx(want) and r.lower <= r.estimate <= r.upper < 1.0
    same = bootstrap_pooled(folds_b, folds_b, n_boot=200)
    assert (same.estimate, same.lower, same.upper) == (1.0, 1.0, 1.0)
    # fold-to-fold spread widens the interval beyond what one fold's images give
    one = bootstrap_paired(folds_a[0], folds_b[0], n_boot=800)
    wide = bootstrap_pooled([folds_a[0], folds_b[1], folds_a[2]], [folds_b[0], folds_a[1], folds_b[2]], n_boot=800)
    assert wide.upper - wide.lower > one.upper - one.lower
    with pytest.raises(ValueError, match="same folds"):
        bootstrap_pooled(folds_a[:2], folds_b)
