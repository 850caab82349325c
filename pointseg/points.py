"""Simulated point annotation: a few clicked pixels per image, drawn once from the dense mask.

Each strategy maps a dense H×W mask to a sparse H×W int64 label map (the class on sampled pixels,
``ignore_index`` elsewhere). Sampling is deterministic for a given (mask, seed) and never lands on an ignored
pixel. Points are drawn once per image and kept for the whole run, as a real annotation would be.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .data.raster import IGNORE_INDEX
from .io import atomic_write_text

if TYPE_CHECKING:  # types only: the config and the scenes do not depend on the sampler
    from .config import Config
    from .data.dataset import Scene


def _pick(rng: np.random.Generator, idx: np.ndarray, k: int) -> np.ndarray:
    if k >= idx.size:
        return idx
    return rng.choice(idx, size=k, replace=False)


def _uniform(mask, n_per_class, rng, ignore_index, **_):
    flat = mask.ravel()
    labelled = np.flatnonzero(flat != ignore_index)
    n_present = np.unique(flat[labelled]).size
    return _pick(rng, labelled, n_per_class * n_present)


def _class_balanced(mask, n_per_class, rng, ignore_index, **_):
    flat = mask.ravel()
    chosen = [_pick(rng, np.flatnonzero(flat == c), n_per_class) for c in np.unique(flat) if c != ignore_index]
    return np.concatenate(chosen) if chosen else np.empty(0, np.int64)


def _mixed(mask, n_per_class, rng, ignore_index, **_):
    """Half the budget class-balanced, the other half uniform: an annotator who clicks every class present a few
    times, then wherever the cursor lands. The same clicks per image as the other strategies (n × classes present);
    each class present gets at least n // 2 (as far as its pixels allow), and the uniform half follows the areas."""
    flat = mask.ravel()
    labelled = np.flatnonzero(flat != ignore_index)
    n_present = np.unique(flat[labelled]).size
    balanced = _class_balanced(mask, n_per_class // 2, rng, ignore_index)
    rest = np.setdiff1d(labelled, balanced, assume_unique=True)
    return np.concatenate([balanced, _pick(rng, rest, n_per_class * n_present - balanced.size)])


def _interior(mask, n_per_class, rng, ignore_index, margin: int = 5, **_):
    """Clicks a person would make: inside a region, at least ``margin`` px from any other label.

    Where a class has no pixel that far inside (thin roads, small buildings), its most interior pixels
    are used instead (the distance threshold drops to that class's own maximum).
    """
    # a boundary pixel has a 4-neighbour with another label (ignore counts as another label)
    edge = np.zeros(mask.shape, bool)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:-1, :] |= mask[1:, :] != mask[:-1, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, 1:] != mask[:, :-1]
    dist = ndimage.distance_transform_edt(~edge).ravel()
    flat = mask.ravel()
    chosen = []
    for c in np.unique(flat):
        if c == ignore_index:
            continue
        idx = np.flatnonzero(flat == c)
        d = dist[idx]
        chosen.append(_pick(rng, idx[d >= min(margin, d.max())], n_per_class))
    return np.concatenate(chosen) if chosen else np.empty(0, np.int64)


STRATEGIES: dict[str, Callable] = {
    "uniform": _uniform,
    "class_balanced": _class_balanced,
    "interior": _interior,
    "mixed": _mixed,
}


def sample_points(
    mask: np.ndarray,
    n_per_class: int,
    strategy: str = "class_balanced",
    seed: int = 0,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Sample point labels from a dense mask.

    Args:
        mask: H×W integer class ids, ``ignore_index`` on unannotated pixels.
        n_per_class: the point budget per class present (``uniform`` draws ``n_per_class`` × classes present
            points over all labelled pixels, whatever their class; ``mixed`` draws half of it class-balanced and
            the rest uniformly).
        strategy: one of :data:`STRATEGIES` (``uniform``, ``class_balanced``, ``interior``, ``mixed``).
        seed: the same (mask, seed) always gives the same points.
    Returns:
        H×W int64, the class on sampled pixels and ``ignore_index`` elsewhere.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown point strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    rng = np.random.default_rng(seed)
    idx = STRATEGIES[strategy](mask, n_per_class, rng, ignore_index)
    out = np.full(mask.shape, ignore_index, np.int64)
    out.ravel()[idx] = mask.ravel()[idx]
    return out


def image_seed(seed: int, name: str) -> int:
    """A per-image seed from the run's point seed and the image's name (stable across runs and machines)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def save_points(path: str | Path, names: list[str], maps: list[np.ndarray], ignore_index: int = IGNORE_INDEX) -> None:
    """Store the annotation as CSV rows (image, row, col, class) — readable by any GIS or spreadsheet."""
    lines = ["image,row,col,class"]
    for name, m in zip(names, maps):
        rows, cols = np.nonzero(m != ignore_index)
        lines += [f"{name},{r},{c},{m[r, c]}" for r, c in zip(rows, cols)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def val_point_maps(cfg: Config, scenes: list[Scene]) -> list[np.ndarray]:
    """Clicks on the val tile, drawn like the training points (same strategy, their own seed; the same budget
    unless ``eval.val_points_per_class`` fixes it)."""
    p = cfg.points
    seed = cfg.seed if p.seed is None else p.seed
    n = cfg.eval.val_points_per_class or p.n_per_class
    return [sample_points(s.mask, n, p.strategy, image_seed(seed, "val:" + s.name)) for s in scenes]
