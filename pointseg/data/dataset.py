"""Dataset descriptions (a YAML per data set) and the scenes they hold, read into memory once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from ..progress import bar

from .bands import BandNorm
from .raster import IGNORE_INDEX, DataError, decode_index_mask, decode_mask, nodata_values, read_bands

_BUILTIN = Path(__file__).parent / "datasets"


_KEYS = {"name", "root", "images", "classes", "ignore_colors", "ignore_values", "mask_dir", "mask_suffix",
         "group_pattern", "groups", "bands", "image_nodata", "normalize", "download"}
_NORMALIZE_KEYS = {"method", "low", "high", "k"}


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set's files are, how its masks are coded (colours or index values), which bands to read,
    what no-data looks like, how bands are stretched to 8 bits and how images are grouped into splits."""

    name: str
    root: str
    images: str
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...] = ()  # colour masks: the RGB of each class
    class_values: tuple[int, ...] = ()  # index masks: the mask value of each class (0/1, 0/255, 1..n)
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    ignore_values: tuple[int, ...] = ()
    mask_dir: tuple[str, str] = ("images", "masks")
    mask_suffix: str = ".png"
    group_pattern: str = r"(.*)"
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # file lists: (group, image paths under root)
    bands: tuple[int, ...] | None = None  # 1-based band indexes; None = the first three
    image_nodata: tuple[float, ...] | None = None  # a pixel whose bands all equal this is no-data
    normalize: tuple[tuple[str, Any], ...] = (("method", "none"),)  # see pointseg/data/bands.py
    download: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_bands(self) -> int:
        return len(self.bands) if self.bands else 3

    @property
    def mask_kind(self) -> str:
        return "index" if self.class_values else "color"

    @property
    def normalize_options(self) -> dict[str, Any]:
        return dict(self.normalize)

    def display_colors(self) -> list[tuple[int, int, int]]:
        """A colour per class for maps and panels (index data sets get a fixed qualitative palette)."""
        if self.class_colors:
            return [tuple(c) for c in self.class_colors]
        palette = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                   (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60)]
        return [palette[i % len(palette)] for i in range(self.num_classes)]

    @classmethod
    def load(cls, name_or_path: str) -> "DatasetSpec":
        """A built-in name (``dubai-aerial``) or the path of a dataset YAML.

        A relative ``root`` is relative to the working directory for a built-in data set (``data/<name>``, put
        there by ``make data``) and relative to the YAML's own folder for a user's file.
        """
        path = Path(name_or_path)
        builtin = not path.suffix
        if builtin:
            path = _BUILTIN / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in _BUILTIN.glob("*.yaml"))
            raise DataError(f"dataset description {name_or_path!r} not found; built-in: {known}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from e
        return cls.from_dict(raw, path, builtin)

    @classmethod
    def from_dict(cls, raw: Any, path: Path, builtin: bool = False) -> "DatasetSpec":
        where = str(path)
        if not isinstance(raw, dict):
            raise DataError(f"{where}: expected a mapping of dataset keys")
        unknown = sorted(set(raw) - _KEYS)
        if unknown:
            raise DataError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(_KEYS)}")
        missing = [k for k in ("name", "root", "images", "classes") if k not in raw]
        if missing:
            raise DataError(f"{where}: missing key(s) {missing}")
        names, colors, values = [], [], []
        for i, c in enumerate(raw["classes"]):
            if not isinstance(c, dict) or "name" not in c or ("color" in c) == ("value" in c):
                raise DataError(f"{where}: classes[{i}] needs a name and either a color [r, g, b] (colour masks) "
                                f"or a value (index masks), got {c!r}")
            names.append(str(c["name"]))
            (colors if "color" in c else values).append(tuple(c["color"]) if "color" in c else int(c["value"]))
        if colors and values:
            raise DataError(f"{where}: mix of color and value classes; a data set's masks are one or the other")
        norm = dict(raw.get("normalize") or {"method": "none"})
        if set(norm) - _NORMALIZE_KEYS or norm.get("method", "none") not in ("none", "percentile", "meanstd"):
            raise DataError(f"{where}: normalize takes method (none | percentile | meanstd), low, high (percentiles)"
                            f" and k (std), got {norm}")
        root = Path(raw["root"])
        if not builtin and not root.is_absolute():
            root = path.parent / root
        suffix = raw.get("mask_suffix", ".png")
        if not isinstance(suffix, str) or not suffix or "/" in suffix or "\\" in suffix:
            raise DataError(f"{where}: mask_suffix {suffix!r} must be the text that replaces an image's extension "
                            "to name its mask in mask_dir (e.g. .png, or _roads.tif for a.tif → a_roads.tif); it "
                            "cannot be empty or hold a folder")
        nodata = raw.get("image_nodata")
        if nodata is not None:  # checked here, so that the error names this file rather than the first image
            nodata_values(nodata, len(raw["bands"]) if raw.get("bands") else 3, f"{where}: image_nodata")
        return cls(
            name=raw["name"], root=str(root), images=raw["images"], class_names=tuple(names),
            class_colors=tuple(colors), class_values=tuple(values),
            ignore_colors=tuple(tuple(c) for c in raw.get("ignore_colors", [])),
            ignore_values=tuple(int(v) for v in raw.get("ignore_values", [])),
            mask_dir=(raw["mask_dir"]["from"], raw["mask_dir"]["to"]) if "mask_dir" in raw else ("images", "masks"),
            mask_suffix=raw.get("mask_suffix", ".png"),
            group_pattern=raw.get("group_pattern", r"(.*)"),
            groups=_group_lists(raw.get("groups"), path),
            bands=tuple(int(b) for b in raw["bands"]) if raw.get("bands") else None,
            image_nodata=None if nodata is None else tuple(float(v) for v in np.atleast_1d(nodata)),
            normalize=tuple(sorted(norm.items())),
            download=raw.get("download", ""),
        )

    def decode_mask(self, path: Path) -> np.ndarray:
        if self.mask_kind == "index":
            return decode_index_mask(path, list(self.class_values), list(self.ignore_values), IGNORE_INDEX)
        return decode_mask(path, list(self.class_colors), list(self.ignore_colors), IGNORE_INDEX)

    def mask_path(self, image: Path) -> Path:
        src, dst = self.mask_dir
        parts = [dst if p == src else p for p in image.parts]
        p = Path(*parts)
        # the image's own extension replaced by the suffix, which may carry more than an extension ("_roads.tif")
        return p.with_name(p.stem + self.mask_suffix)

    def group_of(self, image: Path, root: Path) -> str:
        rel = str(image.relative_to(root))
        m = re.search(self.group_pattern, rel)
        if not m:
            raise DataError(f"{image}: its path does not match group_pattern {self.group_pattern!r}")
        return m.group(1)

    def list_samples(self, root: str | Path | None = None) -> list[tuple[Path, Path, str]]:
        """(image, mask, group) for every image, sorted; every image must have its mask."""
        root = Path(root or self.root)
        if not root.is_dir():
            raise DataError(
                f"data folder {root} does not exist: run `make data` "
                f"(it links ../shared/data/{self.name} when present, else see {self.download or 'the README'})"
            )
        if self.groups:  # splits by file list: each listed image belongs to its list's group
            listed = [(root / f, g) for g, files in self.groups for f in files]
            absent = [str(p) for p, _ in listed if not p.exists()]
            if absent:
                raise DataError(f"{root}: {len(absent)} image(s) named in the dataset's groups do not exist, "
                                f"e.g. {absent[:3]}")
            pairs = sorted(listed)
        else:
            images = sorted(root.glob(self.images))
            if not images:
                raise DataError(f"{root}: no image matches {self.images!r}")
            pairs = [(img, self.group_of(img, root)) for img in images]
        out = []
        for img, group in pairs:
            mask = self.mask_path(img)
            if not mask.exists():
                raise DataError(f"{img}: its mask {mask} is missing")
            out.append((img, mask, group))
        return out


@dataclass
class Scene:
    """One image and its dense mask, at the working scale, plus the mask at full resolution for metrics."""

    name: str
    group: str
    image_path: Path
    image: np.ndarray  # h×w×3 uint8 at the working scale
    mask: np.ndarray  # h×w uint8 class ids at the working scale (nearest neighbour)
    full_mask: np.ndarray = field(repr=False)  # H×W uint8 at the original resolution
    points: np.ndarray | None = None  # h×w int64 sparse label map, set by the point sampler
    valid: np.ndarray | None = None  # h×w bool at the working scale, False on no-data; None = all valid


def _group_lists(raw: Any, path: Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``groups: {train: [a.png, …] | list.txt, …}`` → ((group, files), …); a .txt holds one path per line."""
    if not raw:
        return ()
    if not isinstance(raw, dict):
        raise DataError(f"{path}: groups must map a group name to a list of images or a .txt file of them")
    out = []
    for g, files in raw.items():
        if isinstance(files, str):
            lst = path.parent / files
            if not lst.exists():
                raise DataError(f"{path}: file list {lst} of group {g!r} not found")
            files = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        if not files:
            raise DataError(f"{path}: group {g!r} lists no image")
        out.append((str(g), tuple(str(f) for f in files)))
    return tuple(out)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of an h×w×C uint8 image."""
    if image.shape[:2] == size:
        return image
    t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize that samples pixel centres (never invents a label)."""
    h, w = labels.shape[:2]
    if (h, w) == size:
        return labels
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(int).clip(0, h - 1)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(int).clip(0, w - 1)
    return labels[rows[:, None], cols[None, :]]


def scaled_size(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def load_scene(spec: DatasetSpec, image: Path, mask: Path, group: str, scale: float, root: Path,
               norm: BandNorm | None = None) -> Scene:
    raw, valid = read_bands(image, list(spec.bands) if spec.bands else None, spec.image_nodata)
    img = (norm or BandNorm.identity(spec.num_bands)).to_uint8(raw, str(image))
    full = spec.decode_mask(mask)
    if full.shape == valid.shape and not valid.all():  # no-data pixels are no land cover: ignored everywhere
        full = np.where(valid, full, IGNORE_INDEX).astype(np.uint8)
    if full.shape != img.shape[:2]:
        raise DataError(f"{mask}: mask is {full.shape[1]}×{full.shape[0]} px but its image {image} is "
                        f"{img.shape[1]}×{img.shape[0]} px")
    size = scaled_size(img.shape[:2], scale)
    return Scene(
        name=str(image.relative_to(root)),
        group=group,
        image_path=image,
        image=resize_image(img, size),
        mask=resize_nearest(full, size),
        full_mask=full,
        valid=None if valid.all() else resize_nearest(valid, size),
    )


def load_scenes(spec: DatasetSpec, groups: list[str], scale: float = 1.0, root: str | Path | None = None,
                desc: str = "reading scenes", norm: BandNorm | None = None) -> list[Scene]:
    """Read every scene whose group is in ``groups`` (e.g. tiles "1", "2"), in sorted order."""
    root = Path(root or spec.root)
    chosen = _choose(spec, groups, root)
    return [load_scene(spec, i, m, g, scale, root, norm) for i, m, g in bar(chosen, desc=desc, leave=False)]


def _choose(spec: DatasetSpec, groups: list[str], root: str | Path | None) -> list[tuple[Path, Path, str]]:
    root = Path(root or spec.root)
    samples = spec.list_samples(root)
    known = sorted({g for _, _, g in samples}, key=lambda g: (len(g), g))
    missing = [g for g in groups if g not in known]
    if missing:
        raise DataError(f"{root}: split names group(s) {missing} that do not exist; groups found: {known}")
    return [s for s in samples if s[2] in set(groups)]


def fit_band_norm(spec: DatasetSpec, groups: list[str], root: str | Path | None = None) -> BandNorm:
    """The dataset's band stretch, from the valid pixels of the ``groups`` (the training split) only."""
    opts = spec.normalize_options
    if opts.get("method", "none") == "none":
        return BandNorm.identity(spec.num_bands)
    images, valid = [], []
    for image, _, _ in bar(_choose(spec, groups, root), desc="band statistics", leave=False):
        raw, ok = read_bands(image, list(spec.bands) if spec.bands else None, spec.image_nodata)
        images.append(raw[::4, ::4])  # every 16th pixel: percentiles of 1/16 of a scene are those of all of it
        valid.append(ok[::4, ::4])
    return BandNorm.fit(images, valid, opts["method"], opts.get("low", 2.0), opts.get("high", 98.0), opts.get("k", 3.0))
