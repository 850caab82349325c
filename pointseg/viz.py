"""Pictures of predictions: an image with its clicks, the predicted class map, the ground truth, the errors."""

from __future__ import annotations

import numpy as np

from .data.raster import IGNORE_INDEX


def colorize(labels: np.ndarray, colors: list[tuple[int, int, int]], ignore_rgb=(0, 0, 0)) -> np.ndarray:
    """h×w class ids → h×w×3 uint8 in the data set's colours (ignore → black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = ignore_rgb
    lut[:len(colors)] = np.asarray(colors, np.uint8)
    return lut[labels.astype(np.int64).clip(0, 255)]


def draw_points(image: np.ndarray, points: np.ndarray, colors: list[tuple[int, int, int]],
                radius: int = 3) -> np.ndarray:
    """The image with each click drawn as a dot of its class colour on a white ring (visible on any background).
    An image of other than 3 bands is shown by its first band(s) as RGB."""
    out = np.ascontiguousarray(image[..., [0, 1, 2]] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2))
    h, w = points.shape
    rows, cols = np.nonzero(points != IGNORE_INDEX)
    yy, xx = np.mgrid[-radius - 1:radius + 2, -radius - 1:radius + 2]
    d2 = yy**2 + xx**2
    for r, c in zip(rows, cols):
        for ring, rgb in (((radius + 1) ** 2, (255, 255, 255)), (radius**2, colors[points[r, c]])):
            sel = d2 <= ring
            y, x = r + yy[sel], c + xx[sel]
            ok = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            out[y[ok], x[ok]] = rgb
    return out


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """h×w×3 uint8: white where right, red where wrong, black where the truth has no label."""
    err = np.full(truth.shape + (3,), 255, np.uint8)
    err[pred != truth] = (220, 30, 30)
    err[truth == IGNORE_INDEX] = 0
    return err


def prediction_panel(image: np.ndarray, points: np.ndarray, pred: np.ndarray, truth: np.ndarray | None,
                     colors: list[tuple[int, int, int]]) -> np.ndarray:
    """[image + clicks | prediction | ground truth | errors (red = wrong, ignore = black)], side by side."""
    tiles = [draw_points(image, points, colors), colorize(pred, colors)]
    if truth is not None:
        tiles += [colorize(truth, colors), error_map(pred, truth)]
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
