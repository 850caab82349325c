"""The one trainer: ``fit(config) -> RunResult``, used by the CLI, the sweeps, the benchmarks and the tests.

A run directory holds everything needed to redo or trust a run:
    config.yaml      the resolved config
    points.json      the point seed, the per-image budget and the number of points drawn
    points.csv       every simulated click (image, row, col, class)
    metrics.jsonl    one line per epoch (train loss, val metrics, throughput)
    best.pt          the checkpoint of the best val epoch (model, config, epoch, metric)
    last.pt          model + optimizer + schedule state, to resume a killed run
    final.json       best val metrics and the test metrics of the best checkpoint; its presence = run done
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import Config, load_config, save_config
from .data.crops import CropSampler, photometric_jitter
from .data.dataset import DatasetSpec, Scene, load_scenes
from .data.raster import IGNORE_INDEX
from .infer import evaluate
from .io import atomic_torch_save, read_jsonl, write_json, write_jsonl
from .losses import PartialFocalCE
from .models import build_model
from .points import image_seed, sample_points, save_points

log = logging.getLogger("pointseg")

EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message names the run, epoch and step."""


@dataclass
class RunResult:
    run_dir: Path
    final: dict[str, Any]
    history: list[dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_run_dir(cfg: Config) -> Path:
    return Path(cfg.out_dir) / cfg.name / f"seed{cfg.seed}"


@functools.lru_cache(maxsize=8)
def _cached_scenes(dataset: str, root: str | None, groups: tuple[str, ...], scale: float,
                   max_scenes: int | None) -> tuple[Scene, ...]:
    spec = DatasetSpec.load(dataset)
    scenes = load_scenes(spec, list(groups), scale, root, desc=f"reading tiles {','.join(groups)}")
    return tuple(scenes[:max_scenes] if max_scenes else scenes)


def load_split(cfg: Config, split: str) -> list[Scene]:
    """The scenes of ``train``/``val``/``test``, read once per process (sweep trials share them)."""
    d = cfg.data
    groups = {"train": d.train_groups, "val": d.val_groups, "test": d.test_groups}[split]
    return list(_cached_scenes(d.dataset, d.root, tuple(groups), d.scale, d.max_scenes))


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


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _set_encoder_trainable(model: torch.nn.Module, trainable: bool) -> None:
    for prm in model.encoder.parameters():
        prm.requires_grad_(trainable)


# keys that do not change what a run computes: a run may be resumed or reread with other values
_RESUMABLE_WITH_OTHER = ("name", "out_dir", "wandb.", "train.threads", "train.device", "eval.batch_size")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_same_run(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume or return a run directory that holds a run of another config.

    Otherwise a changed config with an old name would silently give the old run's numbers.
    """
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    try:
        stored = _flat(load_config(path).to_dict())
    except Exception as e:  # a config of an older, incompatible version, or a damaged file
        raise TrainingError(f"{run_dir} holds a run whose config.yaml cannot be read ({e}); "
                            "use another name or out_dir, or delete that directory") from None
    wanted = _flat(cfg.to_dict())
    for flat in (stored, wanted):  # settings of a switched-off semi-supervised loss change nothing
        if not flat.get("semi.weight"):
            for k in [k for k in flat if k.startswith("semi.") and k != "semi.weight"]:
                del flat[k]
    diff = sorted(k for k in set(stored) | set(wanted)
                  if stored.get(k) != wanted.get(k) and not k.startswith(_RESUMABLE_WITH_OTHER))
    if diff:
        shown = ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now" for k in diff[:5])
        raise TrainingError(f"{run_dir} already holds a run with another config ({shown}"
                            f"{', …' if len(diff) > 5 else ''}); use another name or out_dir, or delete that "
                            "directory to start over")


def fit(cfg: Config, run_dir: str | Path | None = None, callback: EpochCallback | None = None,
        progress: bool = True) -> RunResult:
    """Train, select the best val epoch, evaluate it on test. Resumes a killed run; a finished one is returned."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    final_path = run_dir / "final.json"
    check_same_run(cfg, run_dir)
    if final_path.exists():
        import json

        log.info("%s: already finished, returning its results", run_dir)
        return RunResult(run_dir, json.loads(final_path.read_text()), read_jsonl(run_dir / "metrics.jsonl"))

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    spec = DatasetSpec.load(cfg.data.dataset)
    # read (and check) the data before creating the run directory: bad input leaves no half-made run behind
    train_scenes, val_scenes, test_scenes = (load_split(cfg, s) for s in ("train", "val", "test"))
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    targets, points_info = make_targets(cfg, train_scenes)
    write_json(run_dir / "points.json", points_info)
    if points_info["supervision"] == "points":
        save_points(run_dir / "points.csv", [s.name for s in train_scenes], targets)

    style = None
    if cfg.train.histogram_match:
        from .data.style import HistogramStyle

        style = HistogramStyle.fit([s.image for s in train_scenes])
    images = [style(s.image) if style else s.image for s in train_scenes]

    semi = cfg.semi.weight > 0
    # the same supervised crops with or without the semi-supervised loss, so that its gain is measured paired;
    # it learns from the unlabelled pixels of these crops
    sampler = CropSampler(images, targets, cfg.train.crop_size, cfg.train.batch_size, cfg.seed,
                          augment=cfg.train.augment, skip_empty=True)
    model = build_model(cfg.model.arch, cfg.model.encoder, spec.num_classes, cfg.model.encoder_weights,
                        cfg.model.decoder_channels).to(device)
    criterion = PartialFocalCE(cfg.loss.gamma, IGNORE_INDEX, cfg.loss.class_weights).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total_steps = cfg.train.epochs * cfg.train.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.train.warmup_steps))
    teacher = None
    if semi:
        from .semi import Teacher

        teacher = Teacher(model, cfg.semi)

    history: list[dict[str, Any]] = []
    start_epoch, best, resume_gen = 0, -math.inf, None
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists():
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if teacher is not None and state.get("teacher"):
            teacher.load_state_dict(state["teacher"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        resume_gen = state["generator"]
        history = read_jsonl(run_dir / "metrics.jsonl")[:start_epoch]
        log.info("%s: resuming after epoch %d", run_dir, state["epoch"])

    tracker = None
    if cfg.wandb.mode != "disabled":
        from .tracking import Tracker

        tracker = Tracker(cfg.wandb.mode, cfg.wandb.project, run_dir, f"{cfg.name}-seed{cfg.seed}",
                          cfg.to_dict(), cfg.wandb.group, cfg.wandb.tags)
    eval_kw = dict(window=cfg.eval.window, overlap=cfg.eval.overlap, batch_size=cfg.eval.batch_size,
                   device=device, style=style, progress=progress)
    gen = torch.Generator().manual_seed(cfg.seed)  # photometric jitter
    if resume_gen is not None:
        gen.set_state(resume_gen)
    batches = sampler.batches(skip_samples=start_epoch * cfg.train.steps_per_epoch * cfg.train.batch_size)
    train_time = 0.0
    train_images = 0
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            model.train()
            _set_encoder_trainable(model, epoch >= cfg.model.freeze_encoder_epochs)
            losses, sup_losses, pseudo = [], [], []
            bar = tqdm(range(cfg.train.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       leave=False, disable=not progress)
            t0 = time.perf_counter()
            for step in bar:
                x, y = next(batches)
                x, y = x.to(device), y.to(device)
                global_step = epoch * cfg.train.steps_per_epoch + step
                # with a teacher, the student's jitter is the strong view and the clean crop the weak one
                x_in = x
                if cfg.train.augment or teacher is not None:
                    x_in = photometric_jitter(x, gen, cfg.semi.strong_jitter if teacher is not None else 0.1)
                logits = model(x_in)
                loss = sup = criterion(logits, y)
                if teacher is not None:
                    loss = loss + teacher.loss(logits, x, y, global_step / cfg.train.steps_per_epoch)
                if not torch.isfinite(loss):
                    raise TrainingError(f"{run_dir}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                        "stopping (try a lower train.lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if teacher is not None:
                    teacher.update(model, global_step)
                    pseudo.append(teacher.last_fraction)
                losses.append(loss.item())
                sup_losses.append(sup.item())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            dt = time.perf_counter() - t0
            train_time += dt
            train_images += cfg.train.steps_per_epoch * cfg.train.batch_size
            val = evaluate(model, val_scenes, spec.num_classes, list(spec.class_names), "val/", **eval_kw)
            row = {"epoch": epoch + 1, "step": (epoch + 1) * cfg.train.steps_per_epoch,
                   "train/loss": float(np.mean(losses)), "train/sup_loss": float(np.mean(sup_losses)),
                   **({"train/pseudo_fraction": float(np.mean(pseudo))} if pseudo else {}),
                   "train/lr": sched.get_last_lr()[0],
                   "train/img_per_s": cfg.train.steps_per_epoch * cfg.train.batch_size / dt, **val}
            history.append(row)
            improved = val["val/miou"] > best
            if improved:
                best = val["val/miou"]
                atomic_torch_save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": epoch + 1,
                                   "val/miou": best, "num_classes": spec.num_classes,
                                   "class_names": list(spec.class_names), "style": style.state() if style else None},
                                  best_path)
            write_jsonl(run_dir / "metrics.jsonl", history)
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch, "best": best,
                               "generator": gen.get_state(),
                               "teacher": teacher.state_dict() if teacher else None}, last_path)
            if tracker:
                tracker.log(row, step=row["step"])
            log.info("epoch %d: loss %.4f val mIoU %.4f%s", epoch + 1, row["train/loss"], val["val/miou"],
                     " (best)" if improved else "")
            if callback is not None:
                callback(epoch + 1, row)

        ckpt = torch.load(best_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        t0 = time.perf_counter()
        test = evaluate(model, test_scenes, spec.num_classes, list(spec.class_names), "test/",
                        tta=cfg.eval.tta, **eval_kw)
        test_time = time.perf_counter() - t0
        best_row = max(history, key=lambda r: r["val/miou"])
        final = {"name": cfg.name, "seed": cfg.seed, "best_epoch": ckpt["epoch"],
                 **{k: v for k, v in best_row.items() if k.startswith("val/")},
                 **test, "test/seconds": test_time,
                 "train/img_per_s": train_images / train_time if train_time else None,
                 "train/seconds": train_time, "points_total": points_info.get("points_total"),
                 "labelled_pixels": points_info.get("labelled_pixels", points_info.get("points_total"))}
        write_json(final_path, final)
        last_path.unlink(missing_ok=True)  # the run is done; best.pt is what remains useful
        if tracker:
            tracker.summary(final)
    except BaseException:
        if tracker:
            tracker.finish(exit_code=1)
        raise
    if tracker:
        tracker.finish()
    return RunResult(run_dir, final, history)
