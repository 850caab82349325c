import math

import numpy as np
import pytest

from pointseg.metrics import ConfusionMatrix


def test_hand_computed_scores():
    cm = ConfusionMatrix(3)
    target = np.array([0, 0, 1, 1, 2, 255])
    pred = np.array([0, 1, 1, 1, 0, 2])
    cm.update(pred, target)
    s = cm.compute(["a", "b", "c"])
    # class a: tp 1, fp 1, fn 1 -> 1/3; b: tp 2, fp 1 -> 2/3; c: tp 0 -> 0
    assert s["iou/a"] == pytest.approx(1 / 3) and s["iou/b"] == pytest.approx(2 / 3) and s["iou/c"] == 0
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert s["oa"] == pytest.approx(3 / 5)  # the ignored pixel is not counted


def test_accumulates_over_the_split_not_per_image():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0] * 9 + [1]), np.array([0] * 10))
    cm.update(np.array([1]), np.array([1]))
    s = cm.compute()
    assert s["iou/0"] == pytest.approx(9 / 10) and s["iou/1"] == pytest.approx(1 / 2)


def test_absent_class_has_no_iou_and_is_left_out_of_miou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    s = cm.compute(prefix="val/")
    assert math.isnan(s["val/iou/2"]) and s["val/miou"] == 1.0


def test_rejects_out_of_range_and_mismatched():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="outside"):
        cm.update(np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.array([0, 1]), np.array([0]))
