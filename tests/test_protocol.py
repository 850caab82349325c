"""The evaluation protocol: what selects the tested weights, the val clicks, per-image test matrices, exports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointseg.config import ConfigError
from pointseg.data.raster import IGNORE_INDEX
from pointseg.inputs import load_split
from pointseg.metrics import scores
from pointseg.points import val_point_maps
from pointseg.train import fit


def test_points_arm_may_not_select_on_dense_val_masks(tiny_config):
    with pytest.raises(ConfigError, match="val_dense"):
        fit(tiny_config(extra=["name=dense-select", "eval.select=val_dense"]), progress=False)
    # the ceiling may
    res = fit(tiny_config(extra=["name=ceiling", "points.supervision=full", "eval.select=val_dense"]), progress=False)
    best = max(res.history, key=lambda r: r["val/miou"])
    assert res.final["best_epoch"] == best["epoch"] and res.final["select"] == "val_dense"


def test_last_epoch_is_tested_by_default(tiny_config):
    res = fit(tiny_config(extra=["name=last", "train.epochs=3"]), progress=False)
    assert res.final["best_epoch"] == 3 and res.final["select"] == "last"
    assert [r["selected"] for r in res.history] == [False, False, True]


def test_val_points_selection_picks_the_best_epoch_on_clicks(tiny_config):
    res = fit(tiny_config(extra=["name=vp", "train.epochs=3", "eval.select=val_points"]), progress=False)
    scores_ = [r["val_points/miou"] for r in res.history]
    assert res.final["best_epoch"] == int(np.argmax(scores_)) + 1  # first of the best (strictly better only)
    assert res.final["val_points/miou"] == max(scores_)


def test_val_every_validates_on_schedule_and_after_the_last_epoch(tiny_config):
    res = fit(tiny_config(extra=["name=every", "train.epochs=3", "eval.val_every=2"]), progress=False)
    assert ["val/miou" in r for r in res.history] == [False, True, True]


def test_val_clicks_follow_the_training_budget_and_never_land_on_ignore(tiny_config):
    cfg = tiny_config(extra=["points.n_per_class=3"])
    scenes = load_split(cfg, "val")
    maps = val_point_maps(cfg, scenes)
    again = val_point_maps(cfg, scenes)
    for s, m, m2 in zip(scenes, maps, again):
        assert np.array_equal(m, m2)
        labelled = m != IGNORE_INDEX
        assert (s.mask[labelled] != IGNORE_INDEX).all() and (m[labelled] == s.mask[labelled]).all()
        for c in np.unique(s.mask[s.mask != IGNORE_INDEX]):
            assert (m == c).sum() == min(3, (s.mask == c).sum())


def test_a_fixed_val_budget_scores_runs_of_every_training_budget_on_the_same_clicks(tiny_config):
    """A sweep over points.n_per_class compares val-click mIoU across budgets only if the val clicks are one set."""
    scenes = load_split(tiny_config(), "val")
    fixed = [val_point_maps(tiny_config(extra=[f"points.n_per_class={n}", "eval.val_points_per_class=4"]), scenes)
             for n in (1, 3)]
    for a, b in zip(*fixed):
        assert np.array_equal(a, b)
    own = val_point_maps(tiny_config(extra=["points.n_per_class=1"]), scenes)
    assert sum((m != IGNORE_INDEX).sum() for m in own) < sum((m != IGNORE_INDEX).sum() for m in fixed[0])
    with pytest.raises(ConfigError, match="eval.val_points_per_class must be >= 1"):
        fit(tiny_config(extra=["eval.val_points_per_class=0"]), progress=False)


def test_export_holds_what_a_report_needs_and_matches_the_run(tiny_config, tmp_path):
    res = fit(tiny_config(extra=["name=study/cell"]), progress=False)
    path = tmp_path / "results" / "study" / "cell" / "seed0.json"
    rec = json.loads(path.read_text())
    assert rec["config"]["name"] == "study/cell" and rec["seed"] == 0
    assert set(rec["code"]) == {"commit", "dirty"}
    assert rec["history"] == json.loads(json.dumps(res.history))
    per_image = rec["final"]["test/per_image_confusion"]
    scenes = load_split(tiny_config(), "test")
    assert sorted(per_image) == sorted(s.name for s in scenes)
    total = np.sum([np.asarray(m) for m in per_image.values()], axis=0)
    assert total.tolist() == rec["final"]["test/confusion"]
    assert scores(total)["miou"] == pytest.approx(rec["final"]["test/miou"])
    # every test pixel that is not ignored is counted once
    assert total.sum() == sum(int((s.full_mask != IGNORE_INDEX).sum()) for s in scenes)
    assert f"test/group/{scenes[0].group}/miou" in rec["final"]


def test_export_carries_thumbnails_of_the_tested_predictions_and_the_clicks(tiny_config, tmp_path):
    from pointseg.checkpoint import load_model
    from pointseg.infer import predict_probs
    from pointseg.samples import decode, stride

    cfg = tiny_config(extra=["name=study/cell"])
    res = fit(cfg, progress=False)
    samples = json.loads((tmp_path / "results" / "study" / "cell" / "seed0.json").read_text())["samples"]
    test = load_split(cfg, "test")
    picked = [im for im in samples["images"] if im["split"] == "test"]
    assert sorted(im["group"] for im in picked) == sorted({s.group for s in test})  # one image per test tile
    model, _, _ = load_model(res.run_dir)
    for im in picked:
        scene = next(s for s in test if s.name == im["name"])
        k = stride(scene.mask.shape)
        pred = predict_probs(model, scene.image, cfg.eval.window, cfg.eval.overlap, cfg.eval.batch_size).argmax(0)
        assert (decode(im["pred"]) == pred.numpy()[::k, ::k]).all()  # the tested weights' prediction, exactly
        assert (decode(im["truth"]) == scene.mask[::k, ::k]).all()
        assert decode(im["image"]).shape == scene.image[::k, ::k].shape
    train_row = next(im for im in samples["images"] if im["split"] == "train")
    clicks = decode(train_row["clicks"])
    assert (clicks != IGNORE_INDEX).sum() > 0
    assert (clicks[clicks != IGNORE_INDEX] == decode(train_row["truth"])[clicks != IGNORE_INDEX]).mean() > 0.5


def test_thumbnail_clicks_keep_every_class_and_sit_on_their_pixel():
    from pointseg.samples import decode, sample_record

    mask = np.zeros((300, 200), np.uint8)
    mask[:, 100:] = 1
    clicks = np.full(mask.shape, IGNORE_INDEX, np.int64)
    clicks[7, 13], clicks[299, 199] = 0, 1  # off the stride grid, and the last pixel
    image = np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)
    rec = sample_record("a", "g", "train", image, mask, mask, clicks)
    k = rec["stride"]
    small = decode(rec["clicks"])
    assert small.shape == decode(rec["truth"]).shape == mask[::k, ::k].shape
    assert small[7 // k, 13 // k] == 0 and small[299 // k, 199 // k] == 1 and (small != IGNORE_INDEX).sum() == 2
    with pytest.raises(ValueError, match="a: image"):
        sample_record("a", "g", "test", image[:10], mask, mask)
