"""Raster I/O through rasterio: images of any band count and dtype, colour-coded and index masks.

rasterio reads JPEG, PNG and GeoTIFF alike and keeps the georeferencing; predictions are written by blocks, with
the input's CRS and transform, in :mod:`pointseg.scene`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

IGNORE_INDEX = 255


class DataError(ValueError):
    """Bad input data; the message names the file and the problem."""


def _open(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as e:
        raise DataError(f"{path}: cannot be read as a raster ({e})") from e


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as H×W×3 uint8 (the first three bands; a single band is repeated)."""
    with _open(path) as src:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                data = src.read(indexes=list(range(1, min(src.count, 3) + 1)))
        except RasterioIOError as e:
            raise DataError(f"{path}: corrupt raster data ({e})") from e
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    if data.dtype != np.uint8:
        raise DataError(f"{path}: expected 8-bit bands, found {data.dtype}")
    return np.ascontiguousarray(data.transpose(1, 2, 0))


def read_bands(path: str | Path, bands: list[int] | None = None, nodata: float | list[float] | None = None,
               window=None) -> tuple[np.ndarray, np.ndarray]:
    """(H×W×C array in the raster's own dtype, H×W bool valid) for 1-based ``bands`` (None: the first three, a
    single band repeated to three).

    No-data: a pixel is invalid where the raster's own nodata or mask says so, or where every band equals
    ``nodata`` (a number, or one value per band, e.g. white borders [255, 255, 255]). ``window`` is a rasterio
    Window: only that part is read (whole-scene prediction reads a scene window by window).
    """
    with _open(path) as src:
        chosen = list(bands) if bands else list(range(1, min(src.count, 3) + 1))
        bad = [b for b in chosen if not 1 <= b <= src.count]
        if bad:
            raise DataError(f"{path}: has {src.count} band(s); the dataset asks for band(s) {bad} (1-based)")
        if not bands and src.count == 2:  # the first three bands, or one band repeated: two are neither
            raise DataError(f"{path}: has 2 bands; without a band list the first 3 are read (or 1, repeated): "
                            "name the bands to read in the dataset's `bands:`")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                data = src.read(indexes=chosen, window=window)
                # the raster's own no-data (nodata value, alpha band or internal mask): 0 = invalid
                own = None
                if any(flags != [MaskFlags.all_valid] for flags in src.mask_flag_enums):
                    own = src.dataset_mask(window=window) > 0
        except RasterioIOError as e:
            raise DataError(f"{path}: corrupt raster data ({e})") from e
    if not bands and data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    img = np.ascontiguousarray(data.transpose(1, 2, 0))
    valid = np.ones(img.shape[:2], bool) if own is None else own
    if nodata is not None:
        value = np.broadcast_to(nodata_values(nodata, img.shape[2], f"{path}: image no-data"), (img.shape[2],))
        valid &= ~(img == value.astype(img.dtype)).all(axis=2)
    return img, valid


def nodata_values(nodata: float | list[float], n_bands: int, what: str) -> np.ndarray:
    """Image no-data as float64 values: one for every band, or one per band; another count is a DataError that
    starts with ``what`` (the file, or the data set's YAML, and the key)."""
    value = np.asarray(nodata, dtype=np.float64).reshape(-1)
    if value.size not in (1, n_bands):
        raise DataError(f"{what} {np.atleast_1d(nodata).tolist()} has {value.size} values for {n_bands} band(s) "
                        "read; give one value, or one per band")
    return value


def decode_index_mask(path: str | Path, values: list[int], ignore_values: list[int] = (),
                      ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A single-band mask of index values (0/1, 0/255, 1..n) → H×W uint8 class ids through the value table.

    ``values[i]`` is the mask value of class i; ``ignore_values`` and the raster's own nodata become
    ``ignore_index``. A value in neither table raises :class:`DataError` naming the file, the value and its count.
    """
    path = Path(path)
    with _open(path) as src:
        try:
            data = src.read(1)
        except RasterioIOError as e:
            raise DataError(f"{path}: corrupt raster data ({e})") from e
        own_nodata = src.nodata
    table = dict.fromkeys(ignore_values, ignore_index)
    if own_nodata is not None:
        table[own_nodata] = ignore_index
    table.update({v: i for i, v in enumerate(values)})
    keys = np.array(sorted(table), dtype=np.float64)
    mapped = np.array([table[k] for k in sorted(table)], np.uint8)
    flat = data.astype(np.float64)
    pos = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
    unknown = keys[pos] != flat
    if unknown.any():
        bad, counts = np.unique(data[unknown], return_counts=True)
        shown = ", ".join(f"{b} on {c} px" for b, c in zip(bad[:5].tolist(), counts[:5].tolist()))
        raise DataError(f"{path}: {len(bad)} mask value(s) not in the class table: {shown}. Class values: "
                        f"{list(values)}, ignored: {list(ignore_values)}")
    return mapped[pos]


def _read_rgb_mask(path: Path) -> np.ndarray:
    """A colour mask as H×W×3 uint8; palette (P) PNGs are expanded through their colour map."""
    with _open(path) as src:
        try:
            data = src.read()
        except RasterioIOError as e:
            raise DataError(f"{path}: corrupt raster data ({e})") from e
        if src.count == 1:
            try:
                cmap = src.colormap(1)
            except ValueError as e:
                raise DataError(f"{path}: single-band mask without a colour palette") from e
            lut = np.zeros((256, 3), np.uint8)
            for idx, rgba in cmap.items():
                lut[idx] = rgba[:3]
            return lut[data[0]]
    return np.ascontiguousarray(data[:3].transpose(1, 2, 0))


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def decode_mask(
    path: str | Path,
    class_colors: list[tuple[int, int, int]],
    ignore_colors: list[tuple[int, int, int]] = (),
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Read a colour-coded mask and return H×W uint8 class ids (``ignore_index`` on ignored colours).

    A colour that is neither a class nor ignored raises :class:`DataError` naming the file, the colour
    and how many pixels carry it: a wrong colour table must never pass as a silently wrong label.
    """
    path = Path(path)
    key = _rgb_key(_read_rgb_mask(path))
    table = [(_rgb_key(np.array(c)), i) for i, c in enumerate(class_colors)]
    table += [(_rgb_key(np.array(c)), ignore_index) for c in ignore_colors]
    table.sort()
    keys = np.array([k for k, _ in table], np.int32)
    values = np.array([v for _, v in table], np.uint8)
    pos = np.clip(np.searchsorted(keys, key), 0, len(keys) - 1)
    unknown = keys[pos] != key
    if unknown.any():
        bad, counts = np.unique(key[unknown], return_counts=True)
        shown = ", ".join(
            f"({b >> 16},{(b >> 8) & 255},{b & 255}) on {c} px" for b, c in zip(bad[:5], counts[:5])
        )
        raise DataError(
            f"{path}: {len(bad)} colour(s) not in the class table: {shown}. "
            f"Known classes: {list(map(tuple, class_colors))}, ignored: {list(map(tuple, ignore_colors))}"
        )
    return values[pos]
