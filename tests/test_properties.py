"""Property-based tests (hypothesis) of the pieces every number rests on: the loss, the point sampler, the
confusion matrix, crops with D4 moves, config overrides. Each property runs on many generated cases, including
the corners (no labelled pixel, every pixel labelled, γ = 0 and 10, logits of ±1e4, half precision)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pointseg.config import load_config, save_config
from pointseg.data.crops import CropSampler
from pointseg.losses import partial_focal_ce
from pointseg.metrics import ConfusionMatrix, scores
from pointseg.points import STRATEGIES, sample_points

IGNORE = 255
# Two profiles: "ci" (the default) draws the same cases on every run, so a red CI is a regression and never a new
# draw's luck; "explore" (HYPOTHESIS_PROFILE=explore, `make test-explore`) draws new random cases, many more.
# Cases that explore found once are pinned below with @example.
settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(__import__("os").environ.get("HYPOTHESIS_PROFILE", "ci"))
SETTINGS = settings()


def focal_reference(logits: torch.Tensor, target: torch.Tensor, gamma: float, weight=None) -> float:
    """pfCE = Σ focal·w·M / Σ w·M in float64, straight from the definition."""
    x = logits.double()
    labelled = target != IGNORE
    if not labelled.any():
        return 0.0
    t = target.masked_fill(~labelled, 0)
    logp_t = F.log_softmax(x, 1).gather(1, t.unsqueeze(1)).squeeze(1)
    focal = -((1 - logp_t.exp()).clamp_min(0) ** gamma) * logp_t
    w = torch.ones_like(focal) if weight is None else weight.double()[t]
    return float((focal * w)[labelled].sum() / w[labelled].sum())


@st.composite
def loss_cases(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0, 1e4]))
    logits = torch.randn(n, c, h, w, generator=g) * scale
    target = torch.randint(0, c, (n, h, w), generator=g)
    frac = draw(st.sampled_from([0.0, 0.01, 0.3, 0.9, 1.0]))  # share of labelled pixels, both ends included
    target[torch.rand(n, h, w, generator=g) >= frac] = IGNORE
    gamma = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0]))
    weight = torch.rand(c, generator=g) + 0.1 if draw(st.booleans()) else None
    return logits, target, gamma, weight


@SETTINGS
@given(loss_cases())
def test_loss_equals_the_float64_definition_and_is_finite(case):
    logits, target, gamma, weight = case
    value = partial_focal_ce(logits, target, gamma, IGNORE, weight)
    assert torch.isfinite(value)
    assert float(value) == __import__("pytest").approx(focal_reference(logits, target, gamma, weight), rel=1e-4,
                                                         abs=1e-5)


@SETTINGS
@given(loss_cases(), st.sampled_from([torch.float16, torch.bfloat16]))
def test_half_precision_logits_give_the_definition_of_their_rounded_values(case, dtype):
    logits, target, gamma, weight = case
    half = logits.clamp(-6e4, 6e4).to(dtype)
    value = partial_focal_ce(half, target, gamma, IGNORE, weight)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert float(value) == __import__("pytest").approx(focal_reference(half, target, gamma, weight), rel=1e-4,
                                                         abs=1e-5)


# Found by a random draw: γ = 0.5 and one labelled pixel whose p_t rounds to 1 gave ∞ · 0 = NaN in the gradient.
_CONFIDENT_FRACTIONAL_GAMMA = (
    torch.tensor([[[[-29.4002, -49.7354, -1.7150], [-10.2256, 62.9747, 26.8913]],
                   [[10.1372, -6.2609, -28.1729], [-35.4301, -18.8517, -29.4773]]]]),
    torch.tensor([[[255, 1, 255], [255, 255, 255]]]), 0.5, None)


@SETTINGS
@given(loss_cases())
@example(_CONFIDENT_FRACTIONAL_GAMMA)
def test_gradient_flows_only_through_labelled_pixels(case):
    logits, target, gamma, weight = case
    logits = logits.clone().requires_grad_(True)
    loss = partial_focal_ce(logits, target, gamma, IGNORE, weight)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    unlabelled = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert (logits.grad[unlabelled] == 0).all()
    if not (target != IGNORE).any():
        assert float(loss.detach()) == 0.0


@st.composite
def masks(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    n_classes = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    block = draw(st.sampled_from([1, 4, 8]))
    coarse = rng.integers(0, n_classes, (h // block + 1, w // block + 1))
    mask = np.kron(coarse, np.ones((block, block), int))[:h, :w].astype(np.uint8)
    mask[rng.random((h, w)) < draw(st.sampled_from([0.0, 0.2, 0.9, 1.0]))] = IGNORE
    return mask


@SETTINGS
@given(masks(), st.integers(0, 12), st.sampled_from(sorted(STRATEGIES)), st.integers(0, 1000))
def test_point_sampler_budget_ignore_coverage_and_determinism(mask, n, strategy, seed):
    pts = sample_points(mask, n, strategy, seed)
    picked = pts != IGNORE
    assert (mask[picked] != IGNORE).all()  # never on an ignored pixel
    assert (pts[picked] == mask[picked]).all()  # a click carries its pixel's class
    present, counts = np.unique(mask[mask != IGNORE], return_counts=True)
    if strategy == "uniform":
        assert picked.sum() <= n * len(present)
    elif strategy == "mixed":
        assert picked.sum() == min(n * len(present), counts.sum())  # the whole budget, as far as pixels allow
        assert all(int((pts == c).sum()) >= min(n // 2, cnt) for c, cnt in zip(present, counts))
    else:
        per_class = {c: int((pts == c).sum()) for c in present}
        assert all(k <= n for k in per_class.values())  # never over the budget
        if n > 0:  # every class present is covered, as far as its pixels allow
            assert all(per_class[c] == min(n, cnt) for c, cnt in zip(present, counts)) or strategy == "interior"
            assert all(per_class[c] >= 1 for c in present)
    assert (sample_points(mask, n, strategy, seed) == pts).all()  # same seed, same points


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1)), min_size=1, max_size=5),
       st.integers(2, 5), st.randoms(use_true_random=False))
def test_confusion_matrix_is_order_invariant_and_equals_a_direct_count(shapes, k, rnd):
    images = []
    for h, w, seed in shapes:
        rng = np.random.default_rng(seed)
        truth = rng.integers(0, k, (h, w))
        truth[rng.random((h, w)) < 0.2] = IGNORE
        images.append((rng.integers(0, k, (h, w)), truth))
    cm = ConfusionMatrix(k)
    for pred, truth in images:
        cm.update(pred, truth)
    shuffled = list(images)
    rnd.shuffle(shuffled)
    cm2 = ConfusionMatrix(k)
    for pred, truth in shuffled:
        cm2.update(pred, truth)
    direct = np.zeros((k, k), np.int64)
    for pred, truth in images:
        for p, t in zip(pred.ravel(), truth.ravel()):
            if t != IGNORE:
                direct[t, p] += 1
    assert (cm.mat.numpy() == direct).all() and (cm2.mat.numpy() == direct).all()
    ious = [direct[c, c] / (direct[c].sum() + direct[:, c].sum() - direct[c, c])
            for c in range(k) if direct[c].sum() + direct[:, c].sum() > 0]
    if ious:
        assert scores(direct)["miou"] == __import__("pytest").approx(float(np.mean(ious)))


@SETTINGS
@given(st.integers(5, 40), st.integers(5, 40), st.sampled_from([8, 16]), st.integers(0, 10_000))
def test_crops_and_d4_moves_carry_each_point_with_its_pixel(h, w, crop, seed):
    """Each image pixel encodes its own position; a point's label is a function of that position. After crops
    and flips/rotations every labelled target pixel must still sit on the image pixel it was clicked on, and a
    pass shows every point exactly once."""
    rng = np.random.default_rng(seed)
    ids = np.arange(h * w).reshape(h, w)
    image = np.stack([ids % 256, ids // 256, np.full_like(ids, 7)], axis=-1).astype(np.uint8)
    target = np.full((h, w), IGNORE, np.int64)
    chosen = rng.choice(h * w, size=max(1, h * w // 10), replace=False)
    target.ravel()[chosen] = chosen % 5
    sampler = CropSampler([image], [target], crop, batch_size=1, seed=seed, augment=True, skip_empty=True)
    wins = sampler.windows(0)
    seen = 0
    for n, win in enumerate(wins):
        img_c, tgt_c = sampler.sample(0, n, win)
        lab = tgt_c != IGNORE
        pos = img_c[..., 0].astype(int) + 256 * img_c[..., 1].astype(int)
        assert (tgt_c[lab] == pos[lab] % 5).all() and (img_c[..., 2][lab] == 7).all()
        seen += int(lab.sum())
    assert seen == len(chosen)


_OVERRIDE_VALUES = {
    "train.epochs": st.integers(1, 50),
    "train.lr": st.floats(1e-6, 1.0, allow_nan=False),
    "loss.gamma": st.floats(0, 10, allow_nan=False),
    "points.n_per_class": st.integers(0, 100),
    "points.strategy": st.sampled_from(["uniform", "class_balanced", "interior", "mixed"]),
    "data.train_groups": st.lists(st.sampled_from(["1", "2", "3", "10", "a b"]), min_size=1, max_size=4),
    "semi.method": st.sampled_from(["fixmatch", "mean_teacher", "gated_crf", "consistency"]),
    "eval.select": st.sampled_from(["last", "val_points", "val_dense"]),
    "name": st.text(st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_/"), min_size=1,
                    max_size=12),
}


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_OVERRIDE_VALUES)), st.none(), min_size=1).flatmap(
    lambda keys: st.fixed_dictionaries({k: _OVERRIDE_VALUES[k] for k in keys})))
def test_config_overrides_round_trip_through_yaml(tmp_path_factory, values):
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in values.items()]
    cfg = load_config(None, overrides)
    for key, v in values.items():
        section, _, leaf = key.rpartition(".")
        got = getattr(getattr(cfg, section) if section else cfg, leaf)
        assert got == v
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    save_config(cfg, path)
    assert load_config(path).to_dict() == cfg.to_dict()
