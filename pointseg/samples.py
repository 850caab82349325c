"""A few images of a finished run, small enough to commit with its export: for the first test image of each test
tile a thumbnail, its truth and the run's prediction, and one training image with the clicks the run learned from.
The report draws its qualitative panel from these alone, so a fresh clone redraws it without data or checkpoints.

Thumbnails are subsampled (every k-th pixel, the longest side at most ``MAX_SIDE``) and stored as base64 PNG
(labels, lossless) and JPEG (the image): about 10 kB per image.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from PIL import Image

from .data.raster import IGNORE_INDEX

MAX_SIDE = 128


def stride(shape: tuple[int, ...]) -> int:
    return max(1, math.ceil(max(shape[:2]) / MAX_SIDE))


def encode(arr: np.ndarray, fmt: str) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


def display_rgb(image: np.ndarray) -> np.ndarray:
    """An image of any band count and dtype as 8-bit RGB for a picture (first three bands; others stretched 2–98 %)."""
    rgb = image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)
    if rgb.dtype == np.uint8:
        return rgb
    x = rgb.astype(np.float32)
    lo, hi = np.nanpercentile(x, 2), np.nanpercentile(x, 98)
    return (np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def first_of_each_group(scenes: list) -> list:
    """The first scene (by name) of each group, groups in order of appearance: a fixed, seed-independent pick."""
    out: dict[str, Any] = {}
    for s in sorted(scenes, key=lambda s: s.name):
        out.setdefault(s.group, s)
    return list(out.values())


def click_example_index(scenes: list) -> int:
    """The training image whose clicks the samples show: the first by name (the same for every seed and arm)."""
    return min(range(len(scenes)), key=lambda i: scenes[i].name)


def sample_record(name: str, group: str, split: str, image: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                  clicks: np.ndarray | None = None) -> dict[str, Any]:
    """One image at the working scale → its thumbnail record; ``clicks``: the sparse label map the run trained on."""
    if not image.shape[:2] == truth.shape == pred.shape:
        raise ValueError(f"{name}: image {image.shape[:2]}, truth {truth.shape} and prediction {pred.shape} differ")
    k = stride(truth.shape)
    rec = {"name": name, "group": group, "split": split, "stride": k,
           "image": encode(display_rgb(image)[::k, ::k], "JPEG"),
           "truth": encode(truth[::k, ::k].astype(np.uint8), "PNG"),
           "pred": encode(pred[::k, ::k].astype(np.uint8), "PNG")}
    if clicks is not None:  # every click moved to its thumbnail pixel (a stride would drop most of them)
        small = np.full(truth[::k, ::k].shape, IGNORE_INDEX, np.uint8)
        rows, cols = np.nonzero(clicks != IGNORE_INDEX)
        small[rows // k, cols // k] = clicks[rows, cols]
        rec["clicks"] = encode(small, "PNG")
    return rec



def make_samples(model, test_scenes: list, eval_kw: dict[str, Any], class_names: list[str],
                 colors: list[tuple[int, int, int]], click_example: tuple[Any, np.ndarray] | None = None
                 ) -> dict[str, Any]:
    """Predict the picked test images (and the click example) with ``model`` as evaluation does (same window,
    overlap and style), and keep their thumbnails."""
    from .infer import predict_probs

    style = eval_kw.get("style")

    def predict(scene) -> tuple[np.ndarray, np.ndarray]:
        image = style.restyle([scene])[0] if style is not None else scene.image
        probs = predict_probs(model, image, eval_kw["window"], eval_kw["overlap"], eval_kw["batch_size"],
                              device=eval_kw["device"])
        return image, probs.argmax(0).numpy()

    images = []
    for s in first_of_each_group(test_scenes):
        image, pred = predict(s)
        images.append(sample_record(s.name, s.group, "test", image, s.mask, pred))
    if click_example is not None:  # (a training scene, its clicks or None when the run trained on full masks)
        s, clicks = click_example
        image, pred = predict(s)
        images.append(sample_record(s.name, s.group, "train", image, s.mask, pred, clicks))
    return {"max_side": MAX_SIDE, "classes": list(class_names), "colors": [list(c) for c in colors], "images": images}
