"""Training crops that carry the sparse point map with the image.

A *pass* tiles every training image once into crop×crop windows on a grid with a random offset (padding with
ignore outside the image), so each labelled pixel is seen exactly once per pass: no crop or augmentation can
create, duplicate or drop a point. Augmentations are D4 (flips and 90° rotations, which permute pixels, so the
points move with the image) and a brightness/contrast jitter on the image only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import torch

from .raster import IGNORE_INDEX


def crop_padded(arr: np.ndarray, y: int, x: int, size: int, fill) -> np.ndarray:
    """arr[y:y+size, x:x+size] where the window may stick out of arr (filled with ``fill``)."""
    h, w = arr.shape[:2]
    out = np.full((size, size) + arr.shape[2:], fill, dtype=arr.dtype)
    y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + size, h), min(x + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - y:y1 - y, x0 - x:x1 - x] = arr[y0:y1, x0:x1]
    return out


def d4(arr: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 symmetries of the square (k in 0..7): k % 4 quarter turns, then a flip if k >= 4."""
    out = np.rot90(arr, k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class CropSampler:
    """An endless stream of (image, target) batches; pass after pass, each a shuffled tiling of all images.

    Args:
        images: h×w×3 uint8 arrays.
        targets: h×w int64 label maps (the fixed points, or the dense mask for full supervision).
        skip_empty: leave out windows without any labelled pixel (useless to a supervised loss; the points
            they would hold are none, so the per-pass budget is unchanged).
        diagnostic: dense masks cut and moved like the targets, yielded as a third tensor for diagnostics that
            are logged and never used; the crops, their order and the targets are the same with or without them.
    """

    def __init__(self, images: list[np.ndarray], targets: list[np.ndarray], crop_size: int, batch_size: int,
                 seed: int, augment: bool = True, skip_empty: bool = True, ignore_index: int = IGNORE_INDEX,
                 diagnostic: list[np.ndarray] | None = None):
        if len(images) != len(targets) or not images:
            raise ValueError(f"need as many targets as images, got {len(images)} images, {len(targets)} targets")
        self.images, self.targets = images, targets
        # dense masks cut like the targets, for logged diagnostics only (pseudo-label precision); never a target
        self.diagnostic = diagnostic
        self.crop, self.batch_size, self.seed = crop_size, batch_size, seed
        self.augment, self.skip_empty, self.ignore_index = augment, skip_empty, ignore_index
        self.labelled_total = int(sum((t != ignore_index).sum() for t in targets))
        if self.labelled_total == 0:
            raise ValueError("the training set holds no labelled pixel: nothing to learn from")

    def windows(self, pass_index: int) -> list[tuple[int, int, int]]:
        """(image, y, x) of every window of one pass, in shuffled order."""
        rng = np.random.default_rng([self.seed, pass_index])
        out = []
        for i, t in enumerate(self.targets):
            h, w = t.shape
            oy, ox = rng.integers(0, self.crop, size=2)
            for y in range(-int(oy), h, self.crop):
                for x in range(-int(ox), w, self.crop):
                    if self.skip_empty and (crop_padded(t, y, x, self.crop, self.ignore_index) == self.ignore_index).all():
                        continue
                    out.append((i, y, x))
        order = rng.permutation(len(out))
        return [out[j] for j in order]

    def sample(self, pass_index: int, n: int, window: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
        i, y, x = window
        arrays = [crop_padded(self.images[i], y, x, self.crop, 0),
                  crop_padded(self.targets[i], y, x, self.crop, self.ignore_index)]
        if self.diagnostic is not None:
            arrays.append(crop_padded(self.diagnostic[i], y, x, self.crop, self.ignore_index))
        if self.augment:
            k = int(np.random.default_rng([self.seed, pass_index, n]).integers(0, 8))
            arrays = [d4(a, k) for a in arrays]
        return tuple(arrays)

    def passes(self, skip_samples: int = 0) -> Iterator[tuple[int, int, tuple[np.ndarray, ...]]]:
        """Endless crops, pass after pass; ``skip_samples`` fast-forwards (to resume a run where it stopped)."""
        p = 0
        while True:
            wins = self.windows(p)
            if skip_samples >= len(wins):
                skip_samples -= len(wins)
            else:
                for n in range(skip_samples, len(wins)):
                    yield p, n, self.sample(p, n, wins[n])
                skip_samples = 0
            p += 1

    def batches(self, skip_samples: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
        """Endless (N×3×H×W float in [0, 1], N×H×W int64[, N×H×W dense diagnostic]) batches; a batch may
        straddle two passes."""
        items: list[tuple[np.ndarray, ...]] = []
        for p, n, arrays in self.passes(skip_samples):
            items.append(arrays)
            if len(items) == self.batch_size:
                cols = list(zip(*items))
                x = torch.from_numpy(np.stack(cols[0])).permute(0, 3, 1, 2).float().div_(255)
                yield (x, *(torch.from_numpy(np.stack(c).astype(np.int64, copy=False)) for c in cols[1:]))
                items = []


def staged_batches(stages: list[tuple[CropSampler, int | None]], start_step: int = 0) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches from each sampler in turn, for its number of steps (None: endless), as one stream.

    ``start_step`` fast-forwards the whole stream (to resume a run): the stages already done are skipped and the
    current one resumes where it stopped, so a resumed run draws the batches an unbroken one would have drawn.
    """
    for sampler, steps in stages:
        if steps is not None and start_step >= steps:
            start_step -= steps
            continue
        stream = sampler.batches(skip_samples=start_step * sampler.batch_size)
        yield from (stream if steps is None else itertools.islice(stream, steps - start_step))
        start_step = 0


def photometric_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.1) -> torch.Tensor:
    """Per-image brightness and contrast jitter on an N×3×H×W batch in [0, 1] (labels untouched)."""
    n = x.shape[0]  # drawn on the CPU generator whatever x's device, so a GPU run draws the CPU run's numbers
    b = ((torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(x.device)
    c = (1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * strength).to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b).clamp_(0, 1)
