"""Command line: ``python -m pointseg train | evaluate | predict | points``."""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .annotations import write_geojson
from .config import ConfigError, _merge, load_config, parse_overrides, read_config_file
from .data.bands import BandNorm
from .data.raster import IGNORE_INDEX, DataError, read_bands
from .data.style import HistogramStyle
from .progress import bar, say_error, setup_logging


def _overrides(args) -> list[str]:
    return list(args.overrides) + (["wandb.mode=disabled"] if args.no_wandb else [])


def _fit_all(configs: list, run_dir: str | None = None) -> int:
    """Train the configs one after the other (every one checked before: a typo fails in a blink) and print the
    last run's numbers."""
    from .train import TrainingError, fit

    try:
        for i, cfg in enumerate(configs):
            if len(configs) > 1:
                print(f"run {i + 1}/{len(configs)}: {cfg.name} seed {cfg.seed}", file=sys.stderr, flush=True)
            result = fit(cfg, run_dir=run_dir)
    except TrainingError as e:  # a NaN loss, a run directory of another config: the message says what to do
        say_error(str(e))
        return 1
    f = result.final
    print(f"run: {result.run_dir}\nbest epoch {f['best_epoch']}: val mIoU {f['val/miou']:.4f}  "
          f"test mIoU {f['test/miou']:.4f}  test OA {f['test/oa']:.4f}")
    return 0


def _train(args) -> int:
    return _fit_all([load_config(args.config, _overrides(args))], args.run_dir)


BEST_TEACHER, BEST_STUDENT = "experiments/best-teacher.yaml", "experiments/best.yaml"


def data_keys(path: str) -> dict:
    """``--data FILE`` → the config keys that point a recipe at that data: a config file with a ``data:`` block
    (and nothing else; it may ``extends:`` another), or a dataset YAML itself, whose groups must then be named
    train, val and test."""
    p = Path(path)
    raw = read_config_file(p)
    if "classes" in raw:  # a dataset description (pointseg/data/datasets/*.yaml, or the user's own)
        groups = sorted((raw.get("groups") or {}).keys())
        if not {"train", "val", "test"} <= set(groups):
            raise ConfigError(f"{p}: a dataset YAML given as --data needs groups named train, val and test (it has "
                              f"{groups or 'none'}); or give a config file with a data: block naming its groups, "
                              "e.g. data: {dataset: " + str(p) + ", train_groups: [...], val_groups: [...], "
                              "test_groups: [...]}")
        return {"data": {"dataset": str(p), "train_groups": ["train"], "val_groups": ["val"], "test_groups": ["test"]}}
    other = sorted(set(raw) - {"data"})
    if other or "data" not in raw:
        raise ConfigError(f"{p}: --data takes a dataset YAML or a config file with only a data: block; it has "
                          f"{other or 'no data: block'} (the recipe's own keys are not the data's)")
    return {"data": raw["data"]}


def best_configs(data: str | None, overrides: list[str]):
    """The two runs of the best measured recipe on ``data`` (None: Dubai, as measured): the teacher's config and
    its student's, which learns from the teacher's run directory. Names carry the data file's stem, so that runs on
    two data sets never share a directory."""
    prefix = f"{Path(data).stem}-" if data else ""
    extra = data_keys(data) if data else {}
    teacher = load_config(BEST_TEACHER, _merge(extra, parse_overrides([f"name={prefix}best-teacher",
                                                                              *overrides])))
    student = load_config(BEST_STUDENT, _merge(extra, parse_overrides(
        [f"name={prefix}best", f"selftrain.teacher={Path(teacher.out_dir) / teacher.name}/seed{{seed}}", *overrides])))
    return teacher, student


def _best(args) -> int:
    return _fit_all(list(best_configs(args.data, _overrides(args))))  # the teacher, then its student


def _load_models(paths, device):
    """The models of one or more checkpoints (an ensemble), the first one's config, style and raw checkpoint;
    an ensemble must share the class table and the input bands."""
    from .checkpoint import load_model

    models, cfg, style, first = [], None, None, None
    for p in paths:
        m, c, ckpt = load_model(p, device)
        if first is not None:
            for key in ("class_names", "data"):
                if ckpt.get(key) != first.get(key):
                    raise DataError(f"{p}: its {key.replace('_', ' ')} differ from those of {paths[0]}; an "
                                    "ensemble needs checkpoints of one class table and one band layout")
        models.append(m)
        cfg, first = cfg or c, first or ckpt
        style = style or HistogramStyle.from_state(ckpt.get("style"))
    return models, cfg, style, first


def _set_threads(n: int | None) -> None:
    if n is None:
        return
    if n < 1:
        raise ConfigError(f"--threads {n}: give 1 or more")
    import torch

    torch.set_num_threads(n)


def _evaluate(args) -> int:
    _set_threads(args.threads)
    from .data.dataset import DatasetSpec
    from .infer import evaluate, resolve_device
    from .inputs import load_split
    from .io import write_json

    device = resolve_device(args.device)
    models, cfg, style, ckpt = _load_models(args.checkpoints, device)
    if args.dataset:  # another data set (YAML) than the one trained on, e.g. a new region with the same classes
        cfg.data.dataset = args.dataset
    if args.root:
        cfg.data.root = args.root
    if args.groups:  # e.g. one test tile of the split
        setattr(cfg.data, f"{args.split}_groups", list(args.groups))
    spec = DatasetSpec.load(cfg.data.dataset)
    if ckpt.get("class_names") and list(ckpt["class_names"]) != list(spec.class_names):
        raise DataError(f"{args.checkpoints[0]}: trained on classes {ckpt['class_names']}, but the data set "
                        f"{cfg.data.dataset} now has {list(spec.class_names)}; its numbers would be wrong")

    data = ckpt.get("data") or {}
    scenes = load_split(cfg, args.split, BandNorm.from_state(data.get("norm"), data.get("in_channels", 3)))
    metrics = evaluate(models, scenes, spec.num_classes, list(spec.class_names), f"{args.split}/",
                       window=cfg.eval.window, overlap=cfg.eval.overlap, batch_size=cfg.eval.batch_size,
                       tta=args.tta, device=device, style=style)
    print(json.dumps(metrics, indent=2))
    if args.output:
        write_json(args.output, metrics)
    return 0


def _predict(args) -> int:
    _set_threads(args.threads)
    from .data.dataset import DatasetSpec
    from .fuse import for_prediction
    from .infer import resolve_device
    from .scene import SceneInput, predict_scene

    device = resolve_device(args.device)
    models, cfg, _, ckpt = _load_models(args.checkpoints, device)
    models = for_prediction(models, (ckpt.get("data") or {}).get("in_channels", 3), device)
    colors = None if (ckpt.get("data") or {}).get("colors") else DatasetSpec.load(cfg.data.dataset).display_colors()
    inp = SceneInput.from_checkpoint(ckpt, cfg, colors)
    scenes = expand_inputs(args.inputs)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    one = len(scenes) == 1  # one scene: a bar over its blocks; many: one bar over the scenes
    for path in bar(scenes, desc="predict", unit="scene", disable=one):
        dst = out / (Path(path).stem + ".tif")
        probs = out / (Path(path).stem + ".probs.tif") if args.probs else None
        info = predict_scene(models, path, dst, inp, args.window, cfg.eval.overlap, cfg.eval.batch_size,
                             args.tta, device, chunk=args.chunk, probs_path=probs, overwrite=args.overwrite,
                             progress=one)
        mpx = info["pixels"] / 1e6
        tqdm.write(f"{dst}  ({mpx:.1f} Mpx in {info['seconds']:.1f} s, {mpx / info['seconds']:.2f} Mpx/s; "
                   f"{info['blocks_skipped']} no-data block(s) skipped)", file=sys.stdout)
    return 0


SCENE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".vrt")


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given; a folder → its rasters (by suffix, sorted); a pattern with * ? [ → its matches, sorted. A
    name that matches nothing is an error naming it."""

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SCENE_SUFFIXES and f.is_file())
        elif any(c in item for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
        else:
            found = [p]
        if not found:
            raise DataError(f"{item}: no scene there (a folder is searched for {', '.join(SCENE_SUFFIXES)}; a "
                            "pattern like 'scenes/*.tif' is expanded)")
        out += found
    return list(dict.fromkeys(out))


def _points(args) -> int:
    from .data.dataset import DatasetSpec
    from .points import image_seed, sample_points

    spec = DatasetSpec.load(args.dataset)
    mask = spec.decode_mask(Path(args.mask))
    if args.like:  # the image's no-data is no land cover: training never clicks there, nor does the preview

        _, valid = read_bands(args.like, list(spec.bands) if spec.bands else None, spec.image_nodata)
        if valid.shape != mask.shape:
            raise DataError(f"{args.like}: {valid.shape[1]}×{valid.shape[0]} px, its mask {args.mask} "
                            f"{mask.shape[1]}×{mask.shape[0]}: --like takes the image the mask belongs to")
        mask = np.where(valid, mask, IGNORE_INDEX).astype(mask.dtype)
    pts = sample_points(mask, args.n_per_class, args.strategy, image_seed(args.seed, Path(args.mask).name))
    if args.geojson:  # to look at them in QGIS, over the image they were clicked on

        n = write_geojson(args.geojson, pts, list(spec.class_names), args.like or args.mask)
        print(f"{args.geojson}: {n} points", file=sys.stderr)
        return 0
    rows, cols = (pts != 255).nonzero()
    print("row,col,class")
    for r, c in zip(rows, cols):
        print(f"{r},{c},{pts[r, c]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pointseg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run from a YAML config")
    t.add_argument("--config", help="experiment YAML (experiments/…)")
    t.add_argument("--run-dir", help="where to write the run (default runs/<name>/seed<seed>)")
    t.add_argument("--no-wandb", action="store_true", help="no W&B logging (same as wandb.mode=disabled)")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. points.n_per_class=5 train.epochs=3")
    t.set_defaults(func=_train)
    b = sub.add_parser("best", help="the best measured recipe: its teacher, then its self-trained student (2 runs)")
    b.add_argument("--data", help="your data: a dataset YAML with train/val/test groups, or a config file with a "
                   "data: block (default: Dubai, as measured)")
    b.add_argument("--no-wandb", action="store_true", help="no W&B logging (same as wandb.mode=disabled)")
    b.add_argument("overrides", nargs="*", help="key=value for both runs, e.g. seed=1 train.threads=2")
    b.set_defaults(func=_best)
    for name, func, helptext in (("evaluate", _evaluate, "metrics of checkpoints (an ensemble if several)"),
                                 ("predict", _predict, "write GeoTIFF class maps for images")):
        e = sub.add_parser(name, help=helptext)
        e.add_argument("checkpoints", nargs="+", help="run directories or best.pt files")
        e.add_argument("--tta", action="store_true", help="D4 test-time augmentation")
        e.add_argument("--device", default="auto")
        e.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
        if name == "evaluate":
            e.add_argument("--split", default="test", choices=["train", "val", "test"])
            e.add_argument("--dataset", help="dataset YAML (default: the one trained on); its classes must match")
            e.add_argument("--root", help="data folder (default: the one in the run's config)")
            e.add_argument("--groups", nargs="+", help="only these groups (tiles) of the split, e.g. --groups 8")
            e.add_argument("--output", help="write the metrics as JSON here")
        else:
            e.add_argument("--inputs", nargs="+", required=True, help="image files (JPEG, PNG, GeoTIFF), folders "
                           "of them, or quoted patterns ('scenes/*.tif')")
            e.add_argument("--output", required=True, help="folder for the .tif predictions")
            e.add_argument("--probs", action="store_true", help="also write <name>.probs.tif: a uint8 band "
                           "per class (probability × 255)")
            e.add_argument("--chunk", type=int, default=2048, help="block size in pixels: memory is set by this, "
                           "not by the scene (default 2048)")
            e.add_argument("--overwrite", action="store_true", help="replace existing output files")
            e.add_argument("--window", type=int, help="a sliding window of this many pixels at the working scale, "
                           "averaged where windows overlap, as evaluate does (default: each block in one pass, its "
                           "halo giving the context)")
        e.set_defaults(func=func)
    s = sub.add_parser("points", help="print the simulated clicks of one mask as CSV")
    s.add_argument("mask")
    s.add_argument("--dataset", default="dubai-aerial")
    s.add_argument("--n-per-class", type=int, default=10)
    s.add_argument("--strategy", default="class_balanced")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--geojson", help="write the clicks as GeoJSON points here (for QGIS) instead of CSV")
    s.add_argument("--like", help="the image the clicks belong to, for its CRS and transform (default: the mask)")
    s.set_defaults(func=_points)
    return p


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
        say_error(str(e))
        return 2
