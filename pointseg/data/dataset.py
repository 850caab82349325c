"""Dataset descriptions (a YAML per data set) and the scenes they hold, read into memory once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from .raster import IGNORE_INDEX, DataError, decode_mask, read_image, read_shape

_BUILTIN = Path(__file__).parent / "datasets"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set's files are and how its masks are coded."""

    name: str
    root: str
    images: str
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    mask_dir: tuple[str, str] = ("images", "masks")
    mask_suffix: str = ".png"
    group_pattern: str = r"(.*)"
    download: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def load(cls, name_or_path: str) -> "DatasetSpec":
        """A built-in name (``dubai-aerial``) or the path of a dataset YAML."""
        path = Path(name_or_path)
        if not path.suffix:
            path = _BUILTIN / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in _BUILTIN.glob("*.yaml"))
            raise DataError(f"dataset description {name_or_path!r} not found; built-in: {known}")
        raw = yaml.safe_load(path.read_text())
        return cls(
            name=raw["name"],
            root=raw["root"],
            images=raw["images"],
            class_names=tuple(c["name"] for c in raw["classes"]),
            class_colors=tuple(tuple(c["color"]) for c in raw["classes"]),
            ignore_colors=tuple(tuple(c) for c in raw.get("ignore_colors", [])),
            mask_dir=(raw["mask_dir"]["from"], raw["mask_dir"]["to"]) if "mask_dir" in raw else ("images", "masks"),
            mask_suffix=raw.get("mask_suffix", ".png"),
            group_pattern=raw.get("group_pattern", r"(.*)"),
            download=raw.get("download", ""),
        )

    def mask_path(self, image: Path) -> Path:
        src, dst = self.mask_dir
        parts = [dst if p == src else p for p in image.parts]
        return Path(*parts).with_suffix(self.mask_suffix)

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
        images = sorted(root.glob(self.images))
        if not images:
            raise DataError(f"{root}: no image matches {self.images!r}")
        out = []
        for img in images:
            mask = self.mask_path(img)
            if not mask.exists():
                raise DataError(f"{img}: its mask {mask} is missing")
            out.append((img, mask, self.group_of(img, root)))
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


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of an h×w×3 uint8 image."""
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


def load_scene(spec: DatasetSpec, image: Path, mask: Path, group: str, scale: float, root: Path) -> Scene:
    img = read_image(image)
    full = decode_mask(mask, list(spec.class_colors), list(spec.ignore_colors), IGNORE_INDEX)
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
    )


def load_scenes(spec: DatasetSpec, groups: list[str], scale: float = 1.0, root: str | Path | None = None,
                desc: str = "reading scenes") -> list[Scene]:
    """Read every scene whose group is in ``groups`` (e.g. tiles "1", "2"), in sorted order."""
    root = Path(root or spec.root)
    samples = spec.list_samples(root)
    known = sorted({g for _, _, g in samples}, key=lambda g: (len(g), g))
    missing = [g for g in groups if g not in known]
    if missing:
        raise DataError(f"{root}: split names group(s) {missing} that do not exist; groups found: {known}")
    chosen = [s for s in samples if s[2] in set(groups)]
    return [load_scene(spec, i, m, g, scale, root) for i, m, g in tqdm(chosen, desc=desc, leave=False)]
