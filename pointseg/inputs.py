"""What a run reads before it trains: the splits' scenes (read once per process), the training label maps (fixed
simulated clicks, a user's clicked points, or dense masks for the ceiling), the val clicks, and the protocol check
that keeps dense masks away from the points arm. Everything here is checked before a run directory exists, so bad
input leaves no half-made run behind."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import place, read_clicks, save_click_table
from .config import Config, ConfigError, save_config
from .data.bands import BandNorm
from .data.dataset import DatasetSpec, Scene, fit_band_norm, load_scenes
from .data.raster import IGNORE_INDEX, DataError
from .export import code_version
from .io import write_json
from .points import image_seed, sample_points, save_points, val_point_maps

log = logging.getLogger("pointseg")


@functools.lru_cache(maxsize=8)
def _cached_scenes(dataset: str, root: str | None, groups: tuple[str, ...], scale: float,
                   max_scenes: int | None, norm: BandNorm) -> tuple[Scene, ...]:
    spec = DatasetSpec.load(dataset)
    scenes = load_scenes(spec, list(groups), scale, root, desc=f"reading tiles {','.join(groups)}", norm=norm)
    return tuple(scenes[:max_scenes] if max_scenes else scenes)


@functools.lru_cache(maxsize=8)
def _cached_norm(dataset: str, root: str | None, train_groups: tuple[str, ...]) -> BandNorm:
    return fit_band_norm(DatasetSpec.load(dataset), list(train_groups), root)


def band_norm(cfg: Config) -> BandNorm:
    """The stretch of the bands to 8 bits, from the training split's pixels (identity for 8-bit data)."""
    return _cached_norm(cfg.data.dataset, cfg.data.root, tuple(cfg.data.train_groups))


def load_split(cfg: Config, split: str, norm: BandNorm | None = None) -> list[Scene]:
    """The scenes of ``train``/``val``/``test``, read once per process (sweep trials share them); ``norm``:
    a checkpoint's stored stretch (default: the one fitted on this config's training split)."""
    d = cfg.data
    groups = {"train": d.train_groups, "val": d.val_groups, "test": d.test_groups}[split]
    return list(_cached_scenes(d.dataset, d.root, tuple(groups), d.scale, d.max_scenes, norm or band_norm(cfg)))


def make_targets(cfg: Config, scenes: list[Scene]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The label maps the loss sees: fixed simulated points (or dense masks), and a record of them."""
    p = cfg.points
    if p.supervision == "full":
        targets = [s.mask.astype(np.int64) for s in scenes]
        return targets, {"supervision": "full", "labelled_pixels": int(sum((t != IGNORE_INDEX).sum() for t in targets))}
    seed = cfg.seed if p.seed is None else p.seed
    targets, skipped = [], []
    for s in scenes:
        t = sample_points(s.mask, p.n_per_class, p.strategy, image_seed(seed, s.name))
        if (t == IGNORE_INDEX).all():
            skipped.append(s.name)
            log.warning("%s: no labelled pixel to click on; the image gets no points", s.name)
        targets.append(t)
    info = {"supervision": "points", "seed": seed, "n_per_class": p.n_per_class, "strategy": p.strategy,
            "points_total": int(sum((t != IGNORE_INDEX).sum() for t in targets)),
            "images": len(scenes), "images_without_points": skipped}
    return targets, info


def check_protocol(cfg: Config) -> None:
    """The points arm never sees a dense mask: not to train, not to select its checkpoint."""
    if cfg.points.supervision == "points" and cfg.eval.select == "val_dense":
        raise ConfigError("eval.select=val_dense picks the checkpoint with the val tile's dense masks, which a user "
                          "with points does not have; use eval.select=last or val_points for points.supervision=points")
    if cfg.selftrain.teacher and cfg.points.supervision != "points":
        raise ConfigError("selftrain.teacher labels the pixels a points run did not click; with "
                          f"points.supervision={cfg.points.supervision} there is nothing to label")
    if not 0 < cfg.selftrain.threshold <= 1:
        raise ConfigError(f"selftrain.threshold must be in (0, 1], got {cfg.selftrain.threshold}")
    if not 0 <= cfg.selftrain.proportion <= 1:
        raise ConfigError(f"selftrain.proportion must be in [0, 1] (0 = one threshold for all classes), got "
                          f"{cfg.selftrain.proportion}")
    if cfg.semi.weight > 0 and cfg.semi.clicks_view == "weak" and cfg.semi.method == "gated_crf":
        raise ConfigError("semi.clicks_view=weak gives the clicks their own pass on the weak view of a teacher's "
                          "student; semi.method=gated_crf has no teacher and no strong view (use fixmatch, "
                          "mean_teacher or consistency, or leave semi.clicks_view=strong)")
    _check_semi(cfg)
    _check_crops(cfg)
    _check_freeze(cfg)
    if cfg.eval.val_every < 1:
        raise ConfigError(f"eval.val_every must be >= 1, got {cfg.eval.val_every}")
    if cfg.eval.val_points_per_class is not None and cfg.eval.val_points_per_class < 1:
        raise ConfigError(f"eval.val_points_per_class must be >= 1 (or null: the training budget), got "
                          f"{cfg.eval.val_points_per_class}")


# semi.* settings and the range each must lie in: checked before the run directory exists, so that a typo leaves
# nothing behind that would block the corrected command
_SEMI_RANGES = {"weight": (lambda v: v >= 0, "≥ 0"), "threshold": (lambda v: 0 <= v <= 1, "in [0, 1]"),
                "ema": (lambda v: 0 <= v < 1, "in [0, 1)"), "sat_momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
                "cutmix_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
                "strong_jitter": (lambda v: 0 <= v < 1, "in [0, 1)"), "rampup_epochs": (lambda v: v >= 0, "≥ 0"),
                "crf_radius": (lambda v: v >= 1, "≥ 1"), "crf_sigma_xy": (lambda v: v > 0, "> 0"),
                "crf_sigma_rgb": (lambda v: v > 0, "> 0"), "crf_downsample": (lambda v: v >= 1, "≥ 1")}


def _check_semi(cfg: Config) -> None:
    for key, (ok, words) in _SEMI_RANGES.items():
        v = getattr(cfg.semi, key)
        if not ok(v):
            raise ConfigError(f"semi.{key} must be {words}, got {v}")


def _check_crops(cfg: Config) -> None:
    t = cfg.train
    total = t.epochs * t.steps_per_epoch
    if not 0 <= t.jitter < 1:
        raise ConfigError(f"train.jitter must be in [0, 1) (brightness ± jitter, contrast × (1 ± jitter)), got "
                          f"{t.jitter}")
    if t.early_crop_steps < 0 or t.early_crop_steps > total:
        raise ConfigError(f"train.early_crop_steps must be between 0 and the run's {total} steps (train.epochs × "
                          f"train.steps_per_epoch), got {t.early_crop_steps}")
    if t.early_crop_steps and t.early_crop_size is None:
        raise ConfigError(f"train.early_crop_steps={t.early_crop_steps} needs train.early_crop_size (the crop size "
                          "of those steps, px)")
    if t.early_crop_size is not None and (t.early_crop_size < 32 or t.early_crop_size % 32):
        raise ConfigError(f"train.early_crop_size must be a positive multiple of 32 (the network downsamples by 32), "
                          f"got {t.early_crop_size}")


def _check_freeze(cfg: Config) -> None:
    m = cfg.model
    if m.freeze_levels < 0:
        raise ConfigError(f"model.freeze_levels must be >= 0 (0 = train every layer), got {m.freeze_levels}")
    if m.freeze_levels and m.encoder_weights == "none":
        raise ConfigError(f"model.freeze_levels={m.freeze_levels} keeps the encoder's first layers at their "
                          "pretrained weights, and model.encoder_weights=none leaves them random; load weights or "
                          "set model.freeze_levels=0")


def file_targets(cfg: Config, train: list[Scene], val: list[Scene], test: list[Scene]):
    """Real clicks from ``points.file``: (train label maps, val label maps, record, one row per input click)."""

    p = cfg.points
    if not p.file:
        raise ConfigError("points.source=file needs points.file (a .geojson or .csv of clicked points)")
    spec = DatasetSpec.load(cfg.data.dataset)
    clicks = read_clicks(p.file, list(spec.class_names), p.crs, p.class_property)
    maps, rows, counts = place(clicks, {"train": train, "val": val, "test": test}, p.file)
    used = counts.get("train", 0)
    if used == 0:
        raise DataError(f"{p.file}: none of its {len(clicks)} points lands on a training image ({counts})")
    empty = [s.name for s, m in zip(train, maps["train"]) if (m == IGNORE_INDEX).all()]
    if empty:  # such an image gives no crop to train on: said, never skipped without a word
        log.warning("%s: %d of %d training images have no click and are not trained on: %s", p.file, len(empty),
                    len(train), ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else ""))
    unused = {k: v for k, v in counts.items() if k != "train"}
    if unused:
        log.warning("%s: %d of %d points are not trained on: %s (the run's points.csv lists each)", p.file,
                    len(clicks) - used, len(clicks), unused)
    if cfg.eval.select == "val_points" and not counts.get("val"):
        raise ConfigError(f"eval.select=val_points needs clicks on the val images, and {p.file} has none there")
    info = {"supervision": "points", "source": "file", "file": str(p.file), "clicks": len(clicks),
            "status": counts, "points_total": used, "images": len(train), "images_without_points": empty}
    return maps["train"], maps["val"], info, rows


@dataclass
class RunInputs:
    """What a run reads and checks before its directory exists (bad input leaves no half-made run behind)."""

    spec: DatasetSpec
    train: list[Scene]
    val: list[Scene]
    test: list[Scene]
    targets: list[np.ndarray]  # the training label maps the loss sees: clicks, or dense masks for the ceiling
    val_maps: list[np.ndarray]  # clicks on the val tile (selection by val_points, a diagnostic otherwise)
    points_info: dict[str, Any]
    click_rows: list | None = None  # points.source=file: one row per input click, for the run's points.csv
    pseudo: list[np.ndarray] | None = None  # selftrain: the teacher's confident labels with the clicks on top

    @property
    def loss_targets(self) -> list[np.ndarray]:
        """What the loss trains on: the self-training labels when there are, else the clicks (or masks)."""
        return self.pseudo if self.pseudo is not None else self.targets

    @classmethod
    def read(cls, cfg: Config) -> "RunInputs":
        spec = DatasetSpec.load(cfg.data.dataset)
        train, val, test = (load_split(cfg, s) for s in ("train", "val", "test"))
        if cfg.points.source == "file" and cfg.points.supervision == "points":
            targets, val_maps, info, rows = file_targets(cfg, train, val, test)
            inputs = cls(spec, train, val, test, targets, val_maps, info, rows)
        else:
            targets, info = make_targets(cfg, train)
            inputs = cls(spec, train, val, test, targets, val_point_maps(cfg, val), info)
        return inputs  # a self-trained run adds its teacher's labels (pointseg/selftrain.py, called by the trainer)


def write_inputs(cfg: Config, run_dir: Path, inputs: RunInputs) -> None:
    """The run's config, its point record and its clicks, written before the first step."""
    save_config(cfg, run_dir / "config.yaml")
    inputs.points_info["code"] = code_version()
    write_json(run_dir / "points.json", inputs.points_info)
    if inputs.click_rows is not None:
        save_click_table(run_dir / "points.csv", inputs.click_rows)
    elif inputs.points_info["supervision"] == "points":
        save_points(run_dir / "points.csv", [s.name for s in inputs.train], inputs.targets)
