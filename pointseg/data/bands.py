"""Any number of bands of any dtype → the h×w×C uint8 the trainer works on, by a per-band linear stretch.

A stretch maps each band's [lo, hi] to [0, 255] (clipped). ``lo``/``hi`` come from the *training* images:

- ``percentile``: the ``low``-th and ``high``-th percentiles of the valid pixels (e.g. 2 and 98, the usual
  remote-sensing display stretch: robust to a few saturated or dark pixels);
- ``meanstd``: mean ∓ ``k`` standard deviations;
- ``none``: 8-bit data as it is (0 → 0, 255 → 255); any other dtype then needs one of the two above.

The stretch is stored in the checkpoint and applied again at predict time, so a scene is normalised with the
training statistics, never its own. Working in uint8 keeps the scene cache and the crops 4× smaller than float,
and 256 levels per band are finer than the noise of a 12-bit sensor after a 2–98 % stretch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raster import DataError

METHODS = ("none", "percentile", "meanstd")


@dataclass(frozen=True)
class BandNorm:
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    method: str = "none"

    @property
    def bands(self) -> int:
        return len(self.lo)

    @classmethod
    def identity(cls, bands: int) -> "BandNorm":
        return cls((0.0,) * bands, (255.0,) * bands, "none")

    @classmethod
    def fit(cls, images: list[np.ndarray], valid: list[np.ndarray], method: str = "percentile", low: float = 2.0,
            high: float = 98.0, k: float = 3.0, sample: int = 1_000_000, seed: int = 0) -> "BandNorm":
        """Statistics of the valid pixels of h×w×C ``images`` (a random subsample of ``sample`` pixels)."""
        if method not in METHODS:
            raise ValueError(f"normalize.method must be one of {METHODS}, got {method!r}")
        c = images[0].shape[2]
        if method == "none":
            return cls.identity(c)
        pix = np.concatenate([im[v] for im, v in zip(images, valid)]).astype(np.float64)
        if len(pix) == 0:
            raise DataError("no valid training pixel to compute the band normalisation from (all no-data?)")
        rng = np.random.default_rng(seed)
        if len(pix) > sample:
            pix = pix[rng.choice(len(pix), size=sample, replace=False)]
        if method == "percentile":
            lo, hi = np.percentile(pix, low, axis=0), np.percentile(pix, high, axis=0)
        else:
            mean, std = pix.mean(0), pix.std(0)
            lo, hi = mean - k * std, mean + k * std
        hi = np.maximum(hi, lo + 1e-6)  # a constant band maps to 0 rather than dividing by zero
        return cls(tuple(float(v) for v in lo), tuple(float(v) for v in hi), method)

    def to_uint8(self, image: np.ndarray, where: str = "image") -> np.ndarray:
        """h×w×C of any dtype → h×w×C uint8 through the stretch."""
        if image.shape[2] != self.bands:
            raise DataError(f"{where}: has {image.shape[2]} band(s), the normalisation (and the model) expects "
                            f"{self.bands}")
        if self.method == "none":
            if image.dtype != np.uint8:
                raise DataError(f"{where}: {image.dtype} bands need a stretch to 8 bits: add `normalize: {{method: "
                                f"percentile}}` (or meanstd) to the dataset YAML")
            return image
        lo, hi = np.array(self.lo, np.float32), np.array(self.hi, np.float32)
        out = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def state(self) -> dict:
        return {"lo": list(self.lo), "hi": list(self.hi), "method": self.method}

    @classmethod
    def from_state(cls, state: dict | None, bands: int = 3) -> "BandNorm":
        """A checkpoint's stretch; checkpoints from before band normalisation existed held 8-bit RGB."""
        if not state:
            return cls.identity(bands)
        return cls(tuple(state["lo"]), tuple(state["hi"]), state.get("method", "percentile"))
