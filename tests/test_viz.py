"""Prediction pictures: clicks drawn where they are, in their class colour; panels line up."""

import numpy as np

from pointseg.viz import colorize, draw_points, prediction_panel

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_a_click_is_drawn_at_its_pixel_in_its_class_colour_and_nothing_else_moves():
    img = np.full((20, 30, 3), 100, np.uint8)
    pts = np.full((20, 30), 255, np.int64)
    pts[0, 29] = 1  # a corner: the dot is clipped, never wrapped around
    pts[10, 10] = 2
    out = draw_points(img, pts, COLORS, radius=2)
    assert tuple(out[10, 10]) == (0, 0, 255) and tuple(out[0, 29]) == (0, 255, 0)
    assert tuple(out[10, 13]) == (255, 255, 255)  # the white ring
    assert tuple(out[19, 0]) == (100, 100, 100) and tuple(img[10, 10]) == (100, 100, 100)  # input untouched


def test_panel_has_image_prediction_truth_and_errors_side_by_side():
    truth = np.array([[0, 1], [2, 255]])
    pred = np.array([[0, 2], [2, 0]])
    panel = prediction_panel(np.zeros((2, 2, 3), np.uint8), np.full((2, 2), 255), pred, truth, COLORS)
    assert panel.shape == (2, 4 * 2 + 3 * 4, 3)
    err = panel[:, -2:]
    assert tuple(err[0, 1]) == (220, 30, 30) and tuple(err[0, 0]) == (255, 255, 255) and tuple(err[1, 1]) == (0, 0, 0)
    assert tuple(colorize(truth, COLORS)[1, 1]) == (0, 0, 0)
