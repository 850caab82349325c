"""Self-training: a points run's confident predictions become the next run's labels, the clicks on top, and no
dense mask reaches the student, neither directly nor through its teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pointseg.train as train
from pointseg.config import ConfigError, config_differences, load_config
from pointseg.data.crops import CropSampler
from pointseg.data.raster import IGNORE_INDEX
from pointseg.selftrain import class_thresholds, diagnostics, pseudo_label
from pointseg.train import fit, read_inputs

I = IGNORE_INDEX  # noqa: E741 (the tables below read better with a one-letter "ignored")


def test_confident_pixels_get_the_teachers_class_and_clicks_win():
    probs = np.zeros((3, 2, 3), np.float32)
    probs[0] = [[0.95, 0.5, 0.2], [0.1, 0.1, 0.0]]
    probs[1] = [[0.05, 0.4, 0.8], [0.9, 0.0, 0.0]]
    probs[2] = 1 - probs[0] - probs[1]
    clicks = np.full((2, 3), I, np.int64)
    clicks[0, 0] = 2  # a click overrides a confident teacher
    valid = np.array([[True, True, True], [True, True, False]])  # no-data stays unlabelled
    got = pseudo_label(probs, clicks, 0.8, valid)
    assert got.tolist() == [[2, I, 1], [1, 2, I]]


def test_class_balanced_bars_label_each_classs_most_confident_share_never_above_the_cap():
    # class 0 is sure everywhere, class 1 never reaches 0.9: one bar would leave class 1 without any label
    arg = np.array([[0, 0, 0, 0, 1, 1, 1, 1]])
    conf = np.array([[0.99, 0.98, 0.97, 0.96, 0.8, 0.7, 0.6, 0.5]], np.float32)
    valid = np.array([[True] * 7 + [False]])  # a no-data pixel does not count toward its class's share
    thr = class_thresholds([arg], [conf], [valid], 3, proportion=0.5, cap=0.9)
    assert thr[0] == pytest.approx(0.9) and thr[1] == pytest.approx(0.7) and thr[2] == pytest.approx(0.9)
    probs = np.stack([np.where(arg == 0, conf, 0), np.where(arg == 1, conf, 0), np.zeros_like(conf)])
    got = pseudo_label(probs, np.full(arg.shape, I), thr, valid)
    assert got.tolist() == [[0, 0, 0, 0, 1, 1, I, I]]
    assert pseudo_label(probs, np.full(arg.shape, I), 0.9).tolist() == [[0, 0, 0, 0, I, I, I, I]]


def test_diagnostics_count_only_unclicked_labelled_pixels():
    mask = np.array([[0, 1, 1, I]])
    clicks = np.array([[0, I, I, I]])
    labels = np.array([[0, 1, 0, 2]])  # the click, one right, one wrong, one on an ignored pixel
    d = diagnostics([labels], [clicks], [mask])
    assert d == {"pseudo_coverage": 1.0, "pseudo_precision": 0.5}
    assert np.isnan(diagnostics([np.full((1, 4), I)], [clicks], [mask])["pseudo_precision"])
    # per class: both unclicked "b" pixels got a label (one right); the one "a" label is on a "b" pixel
    per = diagnostics([labels], [clicks], [mask], ["a", "b", "c"])["per_class"]
    assert per == {"a": {"coverage": None, "precision": 0.0}, "b": {"coverage": 1.0, "precision": 1.0},
                   "c": {"coverage": None, "precision": None}}


def test_a_student_trains_on_its_teachers_labels_and_records_where_they_came_from(tiny_config, monkeypatch):
    teacher = fit(tiny_config(extra=["name=teacher"]), progress=False)
    cfg = tiny_config(extra=["name=student", f"selftrain.teacher={teacher.run_dir.parent}/seed{{seed}}",
                             "selftrain.threshold=0.01"])
    inputs = read_inputs(cfg)
    clicked = sum(int((t != I).sum()) for t in inputs.targets)
    assert sum(int((t != I).sum()) for t in inputs.loss_targets) > 3 * clicked
    for t, p in zip(inputs.targets, inputs.loss_targets):
        assert (p[t != I] == t[t != I]).all()  # every click kept
    seen = []

    class Recording(CropSampler):
        def __init__(self, images, targets, *a, **k):
            seen.append(targets)
            super().__init__(images, targets, *a, **k)

    monkeypatch.setattr(train, "CropSampler", Recording)
    res = fit(cfg, progress=False)
    assert sum(int((t != I).sum()) for t in seen[0]) > 3 * clicked  # the crops carry the pseudo-labels
    rec = json.loads((res.run_dir / "points.json").read_text())["selftrain"]
    assert rec["teacher"] == str(teacher.run_dir / "best.pt") and len(rec["teacher_sha256"]) == 64
    assert 0 < rec["diagnostic"]["pseudo_coverage"] <= 1 and rec["pseudo_pixels"] > 0
    rows = (res.run_dir / "points.csv").read_text().splitlines()
    assert len(rows) - 1 == clicked  # the run's clicks are the clicks, not the pseudo-labels
    assert "class_thresholds" not in rec  # one bar for all classes unless asked

    balanced = read_inputs(tiny_config(extra=[f"selftrain.teacher={teacher.run_dir}", "selftrain.threshold=1.0",
                                                 "selftrain.proportion=0.5"]))
    rec = balanced.points_info["selftrain"]
    assert rec["proportion"] == 0.5 and set(rec["class_thresholds"]) == set(balanced.spec.class_names)
    assert all(0 < t <= 1.0 for t in rec["class_thresholds"].values())
    assert sum(int((t != I).sum()) for t in balanced.loss_targets) > 2 * clicked  # a bar of 1.0 alone labels ~none

    # selftrain.prior: the teacher is calibrated on its val clicks and re-weighted to EM's class mix first
    corrected = read_inputs(tiny_config(extra=[f"selftrain.teacher={teacher.run_dir}", "selftrain.prior=true"]))
    prior = corrected.points_info["selftrain"]["prior"]
    names = corrected.spec.class_names
    assert [prior[f"prior/source/{c}"] for c in names] == pytest.approx(
        np.bincount(np.concatenate([t[t != I] for t in inputs.targets]), minlength=len(names)) / clicked)
    assert sum(prior[f"prior/target/{c}"] for c in names) == pytest.approx(1.0) and prior["prior/temperature"] > 0

    # selftrain.tta: the teacher labels from the mean of its 8 D4 views, and the record says so
    import pointseg.selftrain as selftrain

    calls, real = [], selftrain.predict_probs
    monkeypatch.setattr(selftrain, "predict_probs", lambda *a, **k: calls.append(a[5] if len(a) > 5 else k.get("tta"))
                        or real(*a, **k))
    tta = read_inputs(tiny_config(extra=[f"selftrain.teacher={teacher.run_dir}", "selftrain.tta=true"]))
    assert calls and all(calls) and tta.points_info["selftrain"]["tta"] is True
    one_view = read_inputs(tiny_config(extra=[f"selftrain.teacher={teacher.run_dir}"]))
    assert any((a != b).any() for a, b in zip(tta.loss_targets, one_view.loss_targets))  # other labels than one view's
    assert "tta" not in one_view.points_info["selftrain"]


def test_the_teacher_must_be_a_points_run_on_the_same_training_tiles(tiny_config):
    full = fit(tiny_config(extra=["name=full-teacher", "points.supervision=full"]), progress=False)
    with pytest.raises(ConfigError, match="dense masks"):
        read_inputs(tiny_config(extra=[f"selftrain.teacher={full.run_dir}"]))
    other = fit(tiny_config(extra=["name=other-tiles", "data.train_groups=['2']", "data.val_groups=['1']"]),
                progress=False)
    with pytest.raises(ConfigError, match="training images alone"):
        read_inputs(tiny_config(extra=[f"selftrain.teacher={other.run_dir}"]))


def test_bad_self_training_settings_are_refused_before_a_run_starts(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere/seed0/best.pt not found"):
        fit(tiny_config(extra=[f"selftrain.teacher={tmp_path}/nowhere/seed{{seed}}"]), progress=False)
    with pytest.raises(ConfigError, match="nothing to label"):
        fit(tiny_config(extra=["points.supervision=full", f"selftrain.teacher={tmp_path}"]), progress=False)
    with pytest.raises(ConfigError, match="threshold"):
        fit(tiny_config(extra=["selftrain.threshold=1.5"]), progress=False)
    with pytest.raises(ConfigError, match="proportion"):
        fit(tiny_config(extra=["selftrain.proportion=-0.1"]), progress=False)


def test_runs_stored_before_self_training_existed_are_the_same_runs():
    old = load_config(overrides={"selftrain": {"threshold": 0.5}})  # a switched-off part's setting
    assert config_differences(old, load_config()) == []
    on = load_config(overrides=["selftrain.teacher=runs/x"])
    assert config_differences(on, load_config()) != []
