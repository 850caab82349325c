"""Label shift (pointseg/prior.py): the class mix of the labels a run trained on, EM's estimate of a scene's
class mix, calibration before it, and the correction of the posteriors; checked against cases whose answer is
known by construction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointseg.data.raster import IGNORE_INDEX
from pointseg.prior import (
    PriorShift,
    calibrate,
    em_prior,
    fit_calibration,
    label_prior,
    prior_weights,
    reweight,
    sample_pixels,
)

I = IGNORE_INDEX  # noqa: E741 (the tables below read better with a one-letter "ignored")
MEANS = np.array([-2.0, 0.0, 2.0])


def _bayes_posteriors(prior: np.ndarray, trained_under: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Pixels drawn from three unit Gaussians mixed by ``prior``; their exact posteriors under ``trained_under``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=prior)
    x = rng.normal(MEANS[y], 1.0)
    post = np.exp(-0.5 * (x[:, None] - MEANS[None]) ** 2) * trained_under
    return post / post.sum(1, keepdims=True)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3))
def test_em_finds_the_class_mix_of_pixels_whose_posteriors_are_exact(weights):
    target = np.asarray(weights) / np.sum(weights)
    source = np.full(3, 1 / 3)
    got = em_prior(_bayes_posteriors(target, source, 40000), source)
    assert np.abs(got - target).max() < 0.03 and got.sum() == pytest.approx(1.0)


def test_em_leaves_the_mix_alone_when_nothing_shifted_and_a_class_without_labels_untouched():
    source = np.array([0.5, 0.3, 0.2])
    assert np.abs(em_prior(_bayes_posteriors(source, source, 40000), source) - source).max() < 0.02
    probs = np.array([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0]])
    got = em_prior(probs, np.array([0.5, 0.5, 0.0]))
    assert got[2] == 0.0 and got.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="N×3"):
        em_prior(np.ones((4, 2)) / 2, source)


def test_the_correction_is_bayes_rule_and_renormalises():
    w = prior_weights(np.array([0.5, 0.25, 0.25, 0.0]), np.array([0.25, 0.5, 0.25, 0.1]))
    assert w.tolist() == [0.5, 2.0, 1.0, 1.0]  # a class the run never saw keeps its posterior's weight
    probs = torch.tensor([[0.6, 0.2], [0.2, 0.2], [0.2, 0.5], [0.0, 0.1]]).view(4, 2, 1)
    q = reweight(probs, w)
    assert torch.allclose(q.sum(0), torch.ones(2, 1))
    assert torch.allclose(q[:, 0, 0], torch.tensor([0.3, 0.4, 0.2, 0.0]) / 0.9)
    assert reweight(probs, None) is probs and torch.allclose(reweight(probs, np.ones(4)), probs)


def test_the_training_labels_class_mix_counts_labelled_pixels_only():
    assert label_prior([np.array([[0, 1, I], [1, 1, 2]]), np.array([[I, I]])], 4).tolist() == [0.2, 0.6, 0.2, 0.0]
    with pytest.raises(ValueError, match="outside 0..2"):
        label_prior([np.array([[0, 3]])], 3)
    with pytest.raises(ValueError, match="no labelled pixel"):
        label_prior([np.full((2, 2), I)], 3)


def test_calibration_recovers_the_temperature_and_biases_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 3
    t0, b0 = 2.0, torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)
    labels = torch.multinomial((logits / t0 + b0).softmax(1), 1, generator=g).squeeze(1)
    t, b = fit_calibration(logits.softmax(1), labels)
    assert t == pytest.approx(t0, rel=0.08)
    assert np.allclose(b - b.mean(), (b0 - b0.mean()).numpy(), atol=0.08)  # softmax ignores a common shift
    # a class no label names keeps b = 0, so its posterior is only tempered
    _, b = fit_calibration(logits.softmax(1), torch.where(labels == 2, 0, labels))
    assert b[2] == 0.0


def test_a_fitted_shift_calibrates_then_reweights_and_records_per_class():
    shift = PriorShift(2.0, np.array([0.1, 0.0, -0.1]), np.array([0.4, 0.3, 0.3]), np.array([0.2, 0.3, 0.5]))
    probs = torch.tensor([0.7, 0.2, 0.1]).view(3, 1, 1)
    want = reweight(calibrate(probs, 2.0, shift.bias), np.array([0.5, 1.0, 5 / 3]))
    assert torch.allclose(shift.apply(probs), want)
    assert torch.allclose(calibrate(probs, 1.0, np.zeros(3)), probs, atol=1e-6)
    rec = shift.record(["a", "b", "c"], "prior/target/5")
    assert rec["prior/temperature"] == 2.0 and rec["prior/target/5/c"] == 0.5 and rec["prior/source/a"] == 0.4
    json.dumps(rec)  # plain numbers: it goes into an export


def test_pixels_are_sampled_on_a_grid_without_no_data():
    probs = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    got = sample_pixels(probs, valid, stride=2)
    assert got.shape == (3, 2) and got[:, 0].tolist() == [2.0, 8.0, 10.0]


def test_a_checkpoint_without_its_class_mix_is_a_clear_error(tiny_config):
    from pointseg.config import ConfigError
    from pointseg.prior import run_label_prior

    cfg = tiny_config()
    with pytest.raises(ConfigError, match="holds no label_prior .* train it again"):
        run_label_prior(cfg, {"model": {}})
    assert run_label_prior(cfg, {"label_prior": [0.25, 0.75]}).tolist() == [0.25, 0.75]
