"""Whole-scene prediction with bounded memory: read, predict and write a raster window by window.

A scene is cut into ``chunk``×``chunk`` blocks (full-resolution pixels). Each block is read with a ``halo`` of
context on every side (rasterio windows), stretched to 8 bits with the checkpoint's band statistics, resized to
the working scale, predicted by overlapping sliding windows (:func:`pointseg.infer.predict_probs`), brought back
to full resolution, and only its centre is written. The halo gives every written pixel the context a one-window
prediction would give it, so blocks meet without seams (the tests compare against one big window). Memory is set
by the block and the model, never by the scene. Blocks that hold only no-data are not predicted.

The class map is a tiled, compressed GeoTIFF with the input's CRS and transform, a colour table, and nodata = 255
where the input is no-data; ``probs_path`` adds one uint8 band per class (probability × 255).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from .data.bands import BandNorm
from .data.dataset import resize_image, scaled_size
from .data.raster import IGNORE_INDEX, DataError, _open, read_bands
from .data.style import HistogramStyle
from .infer import predict_probs
from .io import atomic_write_text
from .progress import bar

NODATA = IGNORE_INDEX  # written where the input is no-data


@dataclass
class SceneInput:
    """How a checkpoint reads a scene: bands, no-data, the stretch to 8 bits, the histogram style, the scale."""

    bands: list[int] | None
    image_nodata: list[float] | None
    norm: BandNorm
    scale: float
    colors: list[tuple[int, int, int]]
    style: object | None = None
    class_names: list[str] | None = None  # written into the class map (tags, and a QGIS style beside it)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, cfg, spec_colors=None) -> "SceneInput":
        data = ckpt.get("data") or {}  # checkpoints from before any-band data held 8-bit RGB
        in_ch = data.get("in_channels", 3)
        return cls(data.get("bands"), data.get("image_nodata"), BandNorm.from_state(data.get("norm"), in_ch),
                   cfg.data.scale, [tuple(c) for c in (data.get("colors") or spec_colors or [])],
                   HistogramStyle.from_state(ckpt.get("style")), list(ckpt.get("class_names") or []) or None)


def blocks(height: int, width: int, chunk: int) -> list[Window]:
    return [Window(c, r, min(chunk, width - c), min(chunk, height - r))
            for r in range(0, height, chunk) for c in range(0, width, chunk)]


def _haloed(win: Window, halo: int, height: int, width: int) -> Window:
    r0, c0 = max(0, win.row_off - halo), max(0, win.col_off - halo)
    r1, c1 = min(height, win.row_off + win.height + halo), min(width, win.col_off + win.width + halo)
    return Window(c0, r0, c1 - c0, r1 - r0)


def _scene_luts(path: Path, inp: SceneInput, chunk: int, height: int, width: int) -> np.ndarray | None:
    """Histogram matching of the whole scene (one look-up table per band from its pooled histogram), by blocks."""
    if inp.style is None:
        return None
    hist = None
    for win in blocks(height, width, chunk):
        raw, valid = read_bands(path, inp.bands, inp.image_nodata, window=win)
        img = inp.norm.to_uint8(raw, str(path))[valid]
        h = np.stack([np.bincount(img[:, b], minlength=256) for b in range(img.shape[1])])
        hist = h if hist is None else hist + h
    return inp.style.lut_from_histogram(hist)


def _profile(src, count: int, block: int) -> dict:
    profile = {"driver": "GTiff", "height": src.height, "width": src.width, "count": count, "dtype": "uint8",
               "compress": "deflate", "tiled": True, "blockxsize": block, "blockysize": block, "nodata": NODATA,
               "BIGTIFF": "IF_SAFER"}
    if src.crs is not None:
        profile.update(crs=src.crs, transform=src.transform)
    return profile


@dataclass
class _Block:
    """One block read and made ready for the network: the haloed image at the working scale, its full-resolution
    size, the block's place inside it and the block's valid pixels."""

    small: np.ndarray
    size: tuple[int, int]
    inner: tuple[slice, slice]
    valid: np.ndarray


def _read_block(src_path: Path, inp: SceneInput, luts, win: Window, halo: int,
                size: tuple[int, int]) -> _Block | None:
    """A block with ``halo`` pixels of context around it, read and resized to the working scale; None when it has
    no valid pixel."""
    big = _haloed(win, halo, *size)
    raw, valid = read_bands(src_path, inp.bands, inp.image_nodata, window=big)
    inner = (slice(win.row_off - big.row_off, win.row_off - big.row_off + win.height),
             slice(win.col_off - big.col_off, win.col_off - big.col_off + win.width))
    if not valid[inner].any():
        return None
    img = inp.norm.to_uint8(raw, str(src_path))
    if luts is not None:
        img = inp.style.apply(img, luts)
    return _Block(resize_image(img, scaled_size(img.shape[:2], inp.scale)), img.shape[:2], inner, valid[inner])


def _block_probs(models, block: _Block, how: dict) -> torch.Tensor:
    """A block's class probabilities at the working scale (``how``: predict_probs' settings)."""
    if how["window"] is None:  # the whole haloed block in one pass: the halo, not window overlap, gives context
        how = {**how, "window": -(-max(block.small.shape[:2]) // 32) * 32}
    return predict_probs(models, block.small, **how)


def upsample_inner(probs: torch.Tensor, size: tuple[int, int], inner: tuple[slice, slice]) -> torch.Tensor:
    """``probs`` (C×h×w at the working scale) resized bilinearly to ``size`` and cut to ``inner``. When ``size``
    is a whole multiple of h×w only the inner rows and columns (with one working-scale pixel around them) are
    resized: the same values as resizing the whole block, for the halo's share of the work less."""
    h, w = probs.shape[1:]
    if (h, w) == tuple(size):
        return probs[:, inner[0], inner[1]]
    step = size[0] // h
    if step * h != size[0] or step * w != size[1] or step < 2:
        full = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
        return full[:, inner[0], inner[1]]
    r0, c0 = max(0, inner[0].start // step - 1), max(0, inner[1].start // step - 1)
    r1, c1 = min(h, -(-inner[0].stop // step) + 1), min(w, -(-inner[1].stop // step) + 1)
    up = F.interpolate(probs[None, :, r0:r1, c0:c1], scale_factor=step, mode="bilinear", align_corners=False)[0]
    return up[:, inner[0].start - r0 * step:inner[0].stop - r0 * step,
              inner[1].start - c0 * step:inner[1].stop - c0 * step]


def qgis_style(names: list[str], colors) -> str:
    """A QGIS layer style (the ``<map>.qml`` QGIS loads with ``<map>.tif``): a paletted renderer naming each class."""

    entries = "\n".join(f'        <paletteEntry value="{i}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" '
                        f"label={quoteattr(n)}/>" for i, (n, (r, g, b)) in enumerate(zip(names, colors)))
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28" styleCategories="Symbology">\n  <pipe>\n'
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
            f"      <colorPalette>\n{entries}\n      </colorPalette>\n    </rasterrenderer>\n  </pipe>\n</qgis>\n")


class _MapWriter:
    """The class map of one scene (and, with a second path, its probabilities), written block by block beside the
    targets and renamed onto them only once every block is in: a killed predict leaves no half-written map."""

    def __init__(self, outs: list[Path], profile: dict, colors, names: list[str] | None = None):
        self.outs, self.profile, self.colors, self.names = outs, profile, colors, names
        self.tmps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in outs]
        self.labels = self.probs = None

    def _open(self, path: Path, count: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path, "w", **{**self.profile, "count": count})

    def skip(self, win: Window) -> None:
        self.labels.write(np.full((win.height, win.width), NODATA, np.uint8), 1, window=win)

    def write_block(self, win: Window, block: "_Block | None", probs: torch.Tensor | None) -> None:
        """A block's labels (its working-scale ``probs`` brought to full resolution), or no-data for no block."""
        if block is None:
            self.skip(win)
        else:
            self.write(win, upsample_inner(probs, block.size, block.inner), block.valid)

    def write(self, win: Window, probs: torch.Tensor, valid: np.ndarray) -> None:
        labels = probs.max(0).indices.to(torch.uint8).numpy()  # no C×H×W copy; argmax(0) is 4x slower here
        labels[~valid] = NODATA
        self.labels.write(labels, 1, window=win)
        if len(self.tmps) > 1:
            if self.probs is None:  # its band count is known once the first block is predicted
                self.probs = self._open(self.tmps[1], probs.shape[0])
            q = (probs.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            q[:, ~valid] = NODATA
            self.probs.write(q, window=win)

    def commit(self) -> None:
        self.labels.close()
        if self.probs is not None:
            self.probs.close()
        elif len(self.tmps) > 1:  # a scene with no valid pixel: its probability raster holds only no-data
            with self._open(self.tmps[1], 1) as p:
                p.write(np.full((p.height, p.width), NODATA, np.uint8), 1)
        for tmp, p in zip(self.tmps, self.outs):
            tmp.replace(p)
        if self.names and self.colors:
            atomic_write_text(self.outs[0].with_suffix(".qml"), qgis_style(self.names, self.colors))

    def __enter__(self) -> "_MapWriter":
        try:  # opened here, not in __init__: a failure while opening still removes the temporary file
            self.labels = self._open(self.tmps[0], 1)
            if self.colors:
                self.labels.write_colormap(1, {i: tuple(c) + (255,) for i, c in enumerate(self.colors)})
            if self.names:  # GIS tools show names, not 0 … n-1: tags in the file, a QGIS style beside it
                self.labels.update_tags(CLASS_NAMES=json.dumps(self.names), NODATA_MEANS="no-data of the input",
                                        **{f"CLASS_{i}": n for i, n in enumerate(self.names)})
                self.labels.set_band_description(1, "class")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for f in (self.labels, self.probs):
            if f is not None and not f.closed:
                f.close()
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)


def _grid(inp: SceneInput, window: int | None, chunk: int, halo: int | None) -> tuple[int, int]:
    """Block size and halo in full-resolution pixels. The halo defaults to a quarter of the sliding window at the
    working scale, or ONE_PASS_HALO working-scale pixels when each block is predicted in one pass; both are rounded
    up to the working-scale pixel grid (at scale 0.5, even pixels), so a block's resize lines up with the one of the
    whole scene."""
    if halo is None:
        halo = math.ceil((window / 4 if window else ONE_PASS_HALO) / inp.scale)
    step = round(1 / inp.scale) if inp.scale < 1 and abs(1 / inp.scale - round(1 / inp.scale)) < 1e-6 else 1
    return -(-chunk // step) * step, -(-halo // step) * step


# One-pass predict's context on each side of a block, in working-scale pixels. A quarter of what a 512 window's
# quarter gave (128): with a trained Dubai model (heldout-tiles t1-best, seed 0) on a 16 Mpx scene, 256 of 16
# million pixels differ from a 128-pixel halo (53 at 64, the value before), and the haloed block is 1.13 times the
# block instead of 1.27 (1.56 at 128): 100 Mpx once running, 18.5 -> 16.6 s at 1 thread and 12.4 -> 11.2 s at 2
# (results/bench_predict_parts.json).
ONE_PASS_HALO = 32


def predict_scene(models, src_path: str | Path, dst_path: str | Path, inp: SceneInput, window: int | None = 512,
                  overlap: float = 0.25, batch_size: int = 4, tta: bool = False, device="cpu", chunk: int = 2048,
                  halo: int | None = None, probs_path: str | Path | None = None, overwrite: bool = False,
                  progress: bool = True) -> dict:
    """Write the class map of ``src_path`` to ``dst_path`` (GeoTIFF); returns pixels, blocks and seconds.
    ``window``: the sliding window at the working scale, or None to predict each haloed block in one pass (no
    window overlap to compute twice; the halo gives every pixel its context)."""

    src_path, dst_path = Path(src_path), Path(dst_path)
    outs = [p for p in (dst_path, Path(probs_path) if probs_path else None) if p is not None]
    for p in outs:
        if p.exists() and not overwrite:
            raise DataError(f"{p}: exists; pass --overwrite to replace it")
    chunk, halo = _grid(inp, window, chunk, halo)
    t0 = time.perf_counter()
    with _open(src_path) as src:
        height, width = src.height, src.width
        profile = _profile(src, 1, 512 if min(height, width) >= 512 else 16)
    luts = _scene_luts(src_path, inp, chunk, height, width)
    how = {"window": window, "overlap": overlap, "batch_size": batch_size, "tta": tta, "device": device}
    wins = blocks(height, width, chunk)
    done = 0
    # The network runs here; reading the next block and writing the last one run beside it in one more thread
    # (GDAL and torch release the GIL), so the network never waits on the disk, decompression or the resize.
    with _MapWriter(outs, profile, inp.colors, inp.class_names) as out, \
            ThreadPoolExecutor(1) as io:
        read = io.submit(_read_block, src_path, inp, luts, wins[0], halo, (height, width))
        written = None
        for i, win in enumerate(bar(wins, desc=f"predict {src_path.name}", leave=False, disable=not progress)):
            block = read.result()
            if i + 1 < len(wins):
                read = io.submit(_read_block, src_path, inp, luts, wins[i + 1], halo, (height, width))
            probs = None if block is None else _block_probs(models, block, how)
            if written is not None:
                written.result()  # raises a failed write here, not after the last block
            written = io.submit(out.write_block, win, block, probs)
            done += block is not None
        if written is not None:
            written.result()
        out.commit()
    skipped = len(wins) - done
    return {"pixels": height * width, "blocks": done, "blocks_skipped": skipped, "seconds": time.perf_counter() - t0}
