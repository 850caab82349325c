import numpy as np
import pytest

from pointseg.points import STRATEGIES, image_seed, sample_points


def _mask(seed=0, h=60, w=70):
    rng = np.random.default_rng(seed)
    m = np.kron(rng.integers(0, 4, (6, 7)), np.ones((10, 10), int)).astype(np.uint8)
    m[rng.random((h, w)) < 0.05] = 255
    return m


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_never_on_ignore_and_labels_match_mask(strategy):
    m = _mask()
    pts = sample_points(m, 5, strategy, seed=1)
    sel = pts != 255
    assert sel.any() and pts.dtype == np.int64
    assert (m[sel] != 255).all() and (pts[sel] == m[sel]).all()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_deterministic_per_seed(strategy):
    m = _mask()
    a, b, c = (sample_points(m, 5, strategy, seed=s) for s in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_class_balanced_counts():
    m = _mask()
    pts = sample_points(m, 7, "class_balanced", seed=0)
    for c in np.unique(m[m != 255]):
        assert (pts == c).sum() == 7
    tiny = np.full((10, 10), 255, np.uint8)
    tiny[0, :3] = 2  # a class with only 3 pixels gives its 3
    assert (sample_points(tiny, 7, "class_balanced") == 2).sum() == 3


def test_uniform_total_budget():
    m = _mask()
    present = len(np.unique(m[m != 255]))
    assert (sample_points(m, 6, "uniform", seed=0) != 255).sum() == 6 * present


def test_mixed_keeps_every_class_and_follows_the_areas():
    m = np.zeros((100, 100), np.uint8)
    m[:10, :10] = 1  # a class on 1 % of the image
    pts = sample_points(m, 20, "mixed", seed=0)
    assert (pts != 255).sum() == 40  # the budget of the other strategies: 20 × 2 classes present
    assert (pts == 1).sum() >= 10  # the class-balanced half: n // 2 of every class present
    assert (pts == 0).sum() >= 28  # the uniform half lands mostly on the large class (expected 19.8 of 20)
    assert (sample_points(m, 20, "class_balanced", seed=0) == 0).sum() == 20


def test_interior_points_are_away_from_boundaries():
    m = np.zeros((80, 80), np.uint8)
    m[:, 40:] = 1
    pts = sample_points(m, 20, "interior", seed=0)
    cols = np.nonzero(pts != 255)[1]
    assert (np.abs(cols - 39.5) >= 5).all()  # at least `margin` px from the boundary between 39 and 40
    assert ((pts == 0).sum(), (pts == 1).sum()) == (20, 20)


def test_interior_falls_back_for_thin_classes():
    m = np.zeros((40, 40), np.uint8)
    m[20, :] = 1  # a 1-px road has no pixel 5 px inside
    assert (sample_points(m, 3, "interior") == 1).sum() == 3


def test_no_labelled_pixel_gives_no_point():
    assert (sample_points(np.full((8, 8), 255, np.uint8), 5) == 255).all()


def test_errors():
    with pytest.raises(ValueError, match="class_balanced"):
        sample_points(_mask(), 5, "random")
    with pytest.raises(ValueError, match="n_per_class"):
        sample_points(_mask(), -1)


def test_image_seed_is_stable():
    assert image_seed(0, "Tile 1/images/a.jpg") == image_seed(0, "Tile 1/images/a.jpg")
    assert image_seed(0, "a") != image_seed(0, "b") and image_seed(0, "a") != image_seed(1, "a")
