"""Histogram matching to a reference style (scikit-image's ``match_histograms``).

The reference is the per-band distribution of all training pixels, kept compact as 1024 quantiles per band and
stored with the checkpoint, so inference on a new tile applies the same style without the training data.
"""

from __future__ import annotations

import numpy as np
from skimage.exposure import match_histograms

_QUANTILES = 1024


class HistogramStyle:
    def __init__(self, reference: np.ndarray):
        self.reference = np.asarray(reference, np.uint8)  # 1×Q×3: a tiny image with the training histogram

    @classmethod
    def fit(cls, images: list[np.ndarray]) -> "HistogramStyle":
        q = np.linspace(0, 1, _QUANTILES)
        # subsample pixels: the quantiles of 1e6 pixels are the quantiles of 1e8 to within a grey level
        rng = np.random.default_rng(0)
        pix = np.concatenate([im.reshape(-1, 3) for im in images])
        pix = pix[rng.choice(len(pix), size=min(len(pix), 1_000_000), replace=False)]
        ref = np.stack([np.quantile(pix[:, b], q) for b in range(3)], axis=-1)
        return cls(ref.round().astype(np.uint8)[None])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        out = match_histograms(image, self.reference, channel_axis=-1)
        return np.clip(out, 0, 255).round().astype(np.uint8)

    def state(self) -> dict:
        return {"reference": self.reference.tolist()}

    @classmethod
    def from_state(cls, state: dict | None) -> "HistogramStyle | None":
        return None if not state else cls(np.array(state["reference"], np.uint8))
