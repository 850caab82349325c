"""Run configuration: plain dataclasses, loaded from YAML, overridden by ``key=value``.

The dataclass defaults are the only place defaults live; an experiment YAML overrides only what differs.
An unknown key anywhere (YAML or override) is an error that names it and suggests the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


@dataclass
class DataConfig:
    dataset: str = "dubai-aerial"  # built-in name or path of a dataset YAML (pointseg/data/datasets/)
    root: str | None = None  # folder with the files; None = the dataset YAML's root (data/<name>)
    scale: float = 0.5  # images are resized once by this factor; metrics still use the full-resolution masks
    # split by tile (parts of a tile overlap in content and style). Two test tiles from two acquisitions, so that
    # no single tile's luck decides a verdict; val (tile 4) gives the curves and, for the ceiling only, may select
    train_groups: list[str] = field(default_factory=lambda: ["1", "2", "3", "6", "7"])
    val_groups: list[str] = field(default_factory=lambda: ["4"])
    test_groups: list[str] = field(default_factory=lambda: ["5", "8"])
    max_scenes: int | None = None  # keep only the first N scenes of each split (tests, smoke runs)


@dataclass
class PointsConfig:
    supervision: Literal["points", "full"] = "points"  # full = dense masks: the ceiling, same network
    n_per_class: int = 10  # clicks per class present in each image
    strategy: Literal["uniform", "class_balanced", "interior", "mixed"] = "class_balanced"
    seed: int | None = None  # None = the run seed
    # simulated: drawn from the dense masks; file: real clicks from points.file (GeoJSON or CSV, see
    # pointseg/annotations.py); the masks are then used for metrics only
    source: Literal["simulated", "file"] = "simulated"
    file: str | None = None
    crs: str | None = None  # the CRS of a CSV's x,y columns (e.g. EPSG:32640)
    class_property: str = "class"  # the GeoJSON property holding a point's class (name or 0-based index)


@dataclass
class ModelConfig:
    arch: Literal["unet", "fpn", "linknet", "deeplabv3plus"] = "unet"
    encoder: str = "tu-tf_efficientnet_lite0"
    encoder_weights: str = "imagenet-offline"  # imagenet-offline | imagenet (hub) | none | path/to/file
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])  # unet only
    freeze_encoder_epochs: int = 0  # train only the decoder for the first epochs
    # the encoder's first k feature levels (strides 2 … 2^k) and the stem before them keep their pretrained weights
    # for the whole run: no gradient is computed through the high-resolution layers, so a step costs less (a timm
    # 'tu-' encoder only; BatchNorm there still adapts its statistics). 0 = train everything, the default: k=2 cost
    # the ceiling 0.008 test mIoU on every seed for a sixth of a step (experiments/studies/freeze-levels.yaml)
    freeze_levels: int = 0


@dataclass
class LossConfig:
    gamma: float = 2.0  # focal gamma; 0 = cross-entropy over the labelled pixels
    class_weights: list[float] | None = None


@dataclass
class SemiConfig:
    weight: float = 0.0  # weight of the semi-supervised loss on unlabelled pixels; 0 = off
    # fixmatch / mean_teacher: pseudo-labels from the student itself or its EMA; gated_crf: a bilateral Potts
    # regulariser on the student's own output (pointseg/unlabelled/crf.py), no teacher
    # consistency: EMA teacher, CutMix + rot/flip views, self-adaptive class-wise thresholds
    # (pointseg/unlabelled/consistency.py)
    method: Literal["fixmatch", "mean_teacher", "gated_crf", "consistency"] = "fixmatch"
    threshold: float = 0.9  # teacher confidence needed for a pseudo-label (consistency: threshold_mode=fixed only)
    ema: float = 0.99  # mean_teacher and consistency: teacher = EMA of the student
    threshold_mode: Literal["fixed", "adaptive"] = "adaptive"  # consistency only: FreeMatch's class-wise thresholds
    sat_momentum: float = 0.99  # consistency, adaptive: EMA momentum of the threshold statistics, per step
    cutmix_prob: float = 0.5  # consistency: share of crops that get a box of another crop of the batch
    geometric: bool = True  # consistency: the student's view is a random rot90/flip of the teacher's
    class_balance: bool = False  # weight pseudo-labels so that each predicted class counts equally
    strong_jitter: float = 0.3  # photometric jitter of the student's (strong) view; the teacher sees the clean crop
    # fixmatch / mean_teacher / consistency: the view the clicks' pfCE is computed on. strong = the student's one
    # forward pass serves both losses; weak = the clicks get their own pass on the crop as a run without a teacher
    # sees it (train.augment's jitter), as in the FixMatch paper: one more forward and backward per step
    clicks_view: Literal["strong", "weak"] = "strong"
    rampup_epochs: int = 2  # the weight rises from 0 to `weight` over these epochs
    crf_radius: int = 3  # gated_crf: window radius at the pooled resolution
    crf_sigma_xy: float = 6.0  # gated_crf: spatial bandwidth, input pixels
    crf_sigma_rgb: float = 0.1  # gated_crf: colour bandwidth, image in [0, 1]
    crf_downsample: int = 2  # gated_crf: computed at 1/N resolution


@dataclass
class SelfTrainConfig:
    # one round of self-training (pointseg/selftrain.py): the finished points run (its directory or best.pt) whose
    # confident predictions label the training pixels of this run, the clicks overriding them; "{seed}" in the
    # path becomes this run's seed. None = off
    teacher: str | None = None
    threshold: float = 0.9  # the teacher's softmax probability needed for a pseudo-label
    # class-balanced thresholds (Zou et al., ECCV 2018): > 0 lowers each class's bar to the probability that its
    # most confident `proportion` of the pixels the teacher assigns to it reach (pooled over the training images),
    # never above `threshold`, so a class the teacher is rarely sure of still gets labels. 0 = one bar for all
    proportion: float = 0.0
    # correct the teacher's probabilities for label shift before labelling (pointseg/prior.py): the class mix of
    # its training labels (class-balanced clicks: near uniform) replaced by the mix EM finds in the training images
    prior: bool = False
    # the teacher labels with D4 test-time augmentation (the mean of its 8 flipped/rotated views' probabilities):
    # the same clicks behind it, 8 forward passes per training image once per run
    tta: bool = False


@dataclass
class TrainConfig:
    # the reference schedule (experiments/studies/convergence.yaml: 800 steps were 0.017 val mIoU below 1600, 2 seeds);
    # experiments/smoke.yaml is the short one for smoke runs. Counted in steps: points and masks get the same compute
    epochs: int = 8
    steps_per_epoch: int = 200
    batch_size: int = 16
    crop_size: int = 128  # an epoch tiles every training image once into crops of this size
    # progressive resizing: the first early_crop_steps steps train on crops of early_crop_size px (a multiple of
    # 32), which cost less per step; the rest on crop_size. Same batch, same schedule of the learning rate. Off: 64 px
    # for 1200 of 1600 steps lost about 0.01 test mIoU on both arms (experiments/studies/early-crops.yaml)
    early_crop_size: int | None = None
    early_crop_steps: int = 0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 0 over the run
    augment: bool = True  # D4 flips/rotations (moving the points) + brightness/contrast jitter
    # strength of augment's brightness/contrast jitter (±jitter, ×(1 ± jitter)); a teacher's student view takes
    # semi.strong_jitter instead, on the clicks' loss too unless semi.clicks_view=weak
    jitter: float = 0.1
    histogram_match: bool = False  # match per-band histograms to the training style (stored in the checkpoint)
    histogram_scope: Literal["group", "image"] = "group"  # a whole tile (acquisition) at once, or each image
    channels_last: bool = True  # NHWC activations: oneDNN's faster convolutions on this CPU (make bench)
    # with channels_last: BatchNorms of ≤ 16 channels train by plain reductions (pointseg/batchnorm.py), whose
    # backward is cheaper on CPU than ATen's; the same numbers up to float rounding, so a machine setting
    reduction_batchnorm: bool = True
    fused_adamw: bool = True  # AdamW's fused kernel (one pass over the weights): same update, other rounding
    # compile the dense focal loss: ~2 ms a step faster, 13–22 s to compile, so off for runs this short (README)
    compile_loss: bool = False
    threads: int | None = None  # torch threads; None = torch's default
    device: str = "auto"  # auto = cuda when available, else cpu


@dataclass
class EvalConfig:
    window: int = 512  # sliding window size (px, at the working scale)
    overlap: float = 0.25
    batch_size: int = 4
    tta: bool = False  # D4 test-time augmentation, mean of probabilities
    # which epoch's weights are tested: last | val_points (mIoU on clicks sampled on the val tile like the training
    # points) | val_dense (the val tile's dense masks; full supervision only: a user with points has no dense mask)
    select: Literal["last", "val_points", "val_dense"] = "last"
    val_every: int = 1  # validate every N epochs (and always after the last); val is a diagnostic under `last`
    # simulated clicks per class per val image (the val-click metric and `val_points` selection); None = the
    # training budget. Fix it to compare runs of different budgets (a sweep over points.n_per_class): with the
    # training budget, a 1-click run is scored on 1 val click per class and a 20-click run on 20, two metrics
    val_points_per_class: int | None = None


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline works with no network; `wandb sync` later
    project: str = "pointseg"
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    # a finished run's small record (config, code version, per-image confusion matrices, val curve, thumbnails of
    # test images) always stays in its run directory (export.json). The study runner and the sweeps also copy it to
    # <export_dir>/<name>/seed<seed>.json, which is committed; an ad-hoc run (None, the default) writes nothing
    # outside its run directory: a user's images are theirs
    export_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    points: PointsConfig = field(default_factory=PointsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    selftrain: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) a value against a type hint; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    return _coerce_scalar(value, tp, where)


def _coerce_scalar(value: Any, tp: Any, where: str) -> Any:
    """A float, int, bool or str setting checked (YAML's near misses converted); any other type passes as is."""
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 4e-3 (no dot) as a string; a user means the number
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls, raw: dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}{_suggest(key, names)}; valid keys here: {names}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, path)
        else:
            kwargs[key] = _coerce(value, tp, path)
    return cls(**kwargs)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "points.n_per_class=5"]`` → nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=3)")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return out


def config_from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, raw, "")


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config YAML as a nested dict, with the file it ``extends:`` (a path relative to this file, else to the
    working directory) merged under it, key by key: a recipe for one's own data is the recipe file plus data keys."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{p}: extends: expected the path of one config file, got {base!r}")
    target = p.parent / base if (p.parent / base).exists() else Path(base)
    if not target.exists():
        raise ConfigError(f"{p}: extends {base!r}, which is neither beside it ({p.parent / base}) nor at {target}")
    if target.resolve() in _seen or target.resolve() == p.resolve():
        raise ConfigError(f"{p}: extends {base!r}, which extends {p} again (a circle)")
    return _merge(read_config_file(target, (*_seen, p.resolve())), raw)


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults ← YAML file (← the file it extends) ← overrides (``key=value`` strings or a nested dict)."""
    raw: dict[str, Any] = read_config_file(path) if path is not None else {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        raw = _merge(raw, extra)
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# how and where a run computes, never what: `--set` of the study runner and the queue takes only these, and a run
# may be resumed or read back with other values of them (so may one stored under another name or folder)
MACHINE_KEYS = ("wandb.", "train.threads", "train.device", "train.compile_loss", "train.reduction_batchnorm",
                "train.fused_adamw", "eval.batch_size")
_SAME_RUN_WITH_OTHER = ("name", "out_dir", "export_dir", *MACHINE_KEYS)


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_identity(cfg: Config) -> dict[str, Any]:
    """The flat settings that decide what a run computes (seed included): two configs with equal identities
    compute the same run, whatever their names, folders or machine settings."""
    flat = _flat(cfg.to_dict())
    # settings of a switched-off part change nothing (and older runs did not store them)
    for section, switch in (("semi.", "semi.weight"), ("selftrain.", "selftrain.teacher")):
        if not flat.get(switch):
            for k in [k for k in flat if k.startswith(section) and k != switch]:
                del flat[k]
    return {k: v for k, v in flat.items() if not k.startswith(_SAME_RUN_WITH_OTHER)}


def config_differences(stored: Config, wanted: Config) -> list[str]:
    """The keys (with both values) on which two configs would compute different runs."""
    a, b = run_identity(stored), run_identity(wanted)
    return [f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
