"""The consistency method (pointseg/unlabelled/): views that move labels with their pixels, FreeMatch-style
class-wise thresholds, a loss on confident unlabelled pixels only, and a run that resumes exactly."""

from __future__ import annotations

import pytest
import torch

from pointseg.config import SemiConfig
from pointseg.data.raster import IGNORE_INDEX
from pointseg.train import fit
from pointseg.unlabelled.consistency import BatchView, ConsistencyTeacher


@pytest.mark.parametrize("seed", range(6))
def test_the_view_moves_images_clicks_and_masks_alike(seed):
    n, h = 4, 16
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(n * h * h).reshape(n, 1, h, h)  # every pixel of the batch named by its own id
    image = torch.cat([ids, -ids], 1).float()
    view = BatchView(n, h, h, g, geometric=True, cutmix_prob=0.7)
    moved_image, moved_ids = view(image), view(ids[:, 0])
    assert torch.equal(moved_image[:, 0].long(), moved_ids) and torch.equal(moved_image[:, 1].long(), -moved_ids)
    # crop 0 holds its own pixels and, inside its box, those of its partner (the last crop)
    assert set(moved_ids[0].div(h * h, rounding_mode="floor").unique().tolist()) in ({0}, {0, 3})


def test_a_view_without_cutmix_or_geometry_is_the_identity():
    x = torch.randn(3, 2, 8, 8)
    assert torch.equal(BatchView(3, 8, 8, torch.Generator(), geometric=False, cutmix_prob=0.0)(x), x)


def _teacher(**kw) -> ConsistencyTeacher:
    kw = {"geometric": False, "cutmix_prob": 0.0, **kw}
    return ConsistencyTeacher(torch.nn.Conv2d(3, 3, 1), SemiConfig(weight=1.0, method="consistency", rampup_epochs=0,
                                                                  **kw))


def test_adaptive_thresholds_are_lower_for_classes_the_teacher_rarely_predicts():
    t = _teacher(threshold_mode="adaptive", sat_momentum=0.5)
    probs = torch.zeros(2, 3, 4, 4)
    probs[:, 0] = 0.9
    probs[:, 1], probs[:, 2] = 0.08, 0.02
    for _ in range(20):
        thr = t.thresholds(probs)
    assert thr[0] == pytest.approx(0.9, abs=1e-3)  # τ → the mean confidence; the dominant class keeps it
    assert thr[2] < thr[1] < thr[0]
    assert _teacher(threshold_mode="fixed", threshold=0.7).thresholds(probs).tolist() == pytest.approx([0.7] * 3)


def test_pseudo_labels_only_on_confident_unlabelled_pixels_normalised_by_the_unlabelled_count():
    t = _teacher(threshold_mode="fixed", threshold=0.0)
    x = torch.randn(2, 3, 4, 4)
    x_s, y = t.prepare(x, torch.full((2, 4, 4), IGNORE_INDEX), torch.Generator())
    y[0, 0, 0] = 1
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = t.loss(logits, x, y)
    pseudo = t.model(x).argmax(1)
    free = y == IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits, pseudo, reduction="none")[free].sum() / free.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert t.last_pseudo[0, 0, 0] == IGNORE_INDEX and (t.last_pseudo[free] == pseudo[free]).all()
    loss.backward()
    assert logits.grad[0, :, 0, 0].abs().sum() == 0  # a clicked pixel gets no pseudo-label gradient


def test_bad_settings_are_refused_by_name_before_the_run_writes_anything(tiny_config):
    from pathlib import Path

    from pointseg.config import ConfigError

    for bad, words in (("semi.cutmix_prob=2.0", r"semi\.cutmix_prob must be in \[0, 1\], got 2\.0"),
                       ("semi.ema=1.0", r"semi\.ema must be in \[0, 1\), got 1\.0"),
                       ("semi.weight=-0.1", r"semi\.weight must be ≥ 0"), ("semi.crf_radius=0", "semi.crf_radius")):
        cfg = tiny_config(extra=["name=bad-semi", "semi.method=consistency", "semi.weight=1.0", bad])
        with pytest.raises(ConfigError, match=words):
            fit(cfg, progress=False)
        assert not (Path(cfg.out_dir) / "bad-semi").exists()  # the corrected command is not blocked
    fixed = tiny_config(extra=["name=bad-semi", "semi.method=consistency", "semi.weight=1.0", "semi.cutmix_prob=1.0",
                               "train.epochs=1"])
    assert fit(fixed, progress=False).final["test/miou"] >= 0


def test_a_killed_consistency_run_resumes_to_the_uninterrupted_result(tiny_config):
    extra = ["train.epochs=3", "semi.method=consistency", "semi.weight=1.0", "semi.rampup_epochs=0"]
    whole = fit(tiny_config(extra=["name=cons-whole", *extra]), progress=False)
    assert all(0 <= r["diag/pseudo_precision"] <= 1 for r in whole.history if r["diag/pseudo_coverage"] > 0)

    def die(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    cfg = tiny_config(extra=["name=cons-killed", *extra])
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callback=die, progress=False)
    resumed = fit(cfg, progress=False)
    assert [r["train/loss"] for r in resumed.history] == pytest.approx([r["train/loss"] for r in whole.history])
    assert resumed.final["test/miou"] == pytest.approx(whole.final["test/miou"])


def test_the_student_learns_the_clicks_on_the_view_it_sees(tiny_config, monkeypatch):
    """Every step, the clicks the supervised loss gets sit on the pixels of the very input the student sees:
    each click's class is written into the image as a colour before the view moves it, and must be found there."""
    import pointseg.train as train_mod

    seen = []
    real_step = train_mod._train_step

    def painted_step(r, x, y, global_step):
        x = x.clone()
        for c in range(3):  # paint: clicked pixels get a colour that encodes their class
            x[:, c][y != IGNORE_INDEX] = (y[y != IGNORE_INDEX].float() + 1) / 10 + c / 100

        real_forward = r.model.forward

        def spy(inp):
            seen.append(inp.detach().clone())
            return real_forward(inp)

        r.model.forward = spy  # an instance attribute over the class's method, removed again below
        real_criterion = r.criterion

        def check(logits, target):
            inp = seen[-1]
            labelled = target != IGNORE_INDEX
            assert labelled.any()
            assert torch.allclose(inp[:, 0][labelled], (target[labelled].float() + 1) / 10, atol=1e-5)
            return real_criterion(logits, target)

        r.criterion = check
        try:
            return real_step(r, x, y, global_step)
        finally:
            r.criterion = real_criterion
            del r.model.forward

    monkeypatch.setattr(train_mod, "_train_step", painted_step)
    fit(tiny_config(extra=["name=cons-aligned", "train.epochs=1", "semi.method=consistency", "semi.weight=1.0",
                           "semi.cutmix_prob=1.0", "train.augment=false", "semi.strong_jitter=0.0"]), progress=False)
    assert len(seen) >= 2  # every step was checked, not only the first
