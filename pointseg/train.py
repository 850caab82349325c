"""The one trainer: ``fit(config) -> RunResult``, used by the CLI, the sweeps, the benchmarks and the tests.

A run directory holds everything needed to redo or trust a run:
    config.yaml      the resolved config
    points.json      the point seed, the per-image budget and the number of points drawn
    points.csv       every simulated click (image, row, col, class)
    metrics.jsonl    one line per epoch (train loss, val metrics, throughput)
    best.pt          the selected weights (``eval.select``: the last epoch, or the best on val clicks / dense val)
    last.pt          model + optimizer + schedule state, to resume a killed run
    final.json       val metrics of the selected epoch, test metrics of its weights (whole split, per tile, per
                     image confusion matrices), the code version; its presence = run done
and, with ``export_dir`` set, a small committable copy of what it measured: <export_dir>/<name>/seed<k>.json
"""

from __future__ import annotations

import errno
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .batchnorm import use_reduction_batchnorm
from .config import Config, ConfigError, config_differences, load_config
from .data.bands import BandNorm
from .data.crops import CropSampler, photometric_jitter, staged_batches
from .data.dataset import DatasetSpec, Scene
from .data.raster import IGNORE_INDEX
from .data.style import HistogramStyle
from .export import export_path, export_run, machine
from .infer import predict_probs, resolve_device, scene_confusions, split_record
from .inputs import RunInputs, band_norm, check_protocol, write_inputs
from .io import (
    CorruptFileError,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint_file,
    read_jsonl,
    write_json,
    write_jsonl,
)
from .losses import PartialFocalCE
from .metrics import scores
from .models import build_model, frozen_parameter_names, set_encoder_trainable
from .prior import label_prior
from .progress import bar
from .runlock import RunLock, RunLockedError
from .selftrain import pseudo_targets
from .tracking import Tracker
from .unlabelled import build as build_unlabelled
from .unlabelled import scale as unlabelled_scale
from .viz import prediction_panel

log = logging.getLogger("pointseg")

EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message names the run, epoch and step."""


@dataclass
class RunResult:
    run_dir: Path
    final: dict[str, Any]
    history: list[dict[str, Any]]


def default_run_dir(cfg: Config) -> Path:
    return Path(cfg.out_dir) / cfg.name / f"seed{cfg.seed}"


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def check_same_run(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume or return a run directory that holds a run of another config.

    Otherwise a changed config with an old name would silently give the old run's numbers.
    """
    path = run_dir / "config.yaml"
    if not path.exists():
        return
    try:
        stored = load_config(path)
    except Exception as e:  # a config of an older, incompatible version, or a damaged file
        raise TrainingError(f"{run_dir} holds a run whose config.yaml cannot be read ({e}); "
                            "use another name or out_dir, or delete that directory") from None
    diff = config_differences(stored, cfg)
    if diff:
        raise TrainingError(f"{run_dir} already holds a run with another config ({', '.join(diff[:5])}"
                            f"{', …' if len(diff) > 5 else ''}); use another name or out_dir, or delete that "
                            "directory to start over")


@dataclass
class _Run:
    """What one training run holds between its steps (built by :func:`_prepare`)."""

    cfg: Config
    run_dir: Path
    device: torch.device
    spec: DatasetSpec
    model: torch.nn.Module
    criterion: PartialFocalCE
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    teacher: Any
    batches: Any
    gen: torch.Generator
    style: Any
    val_scenes: list[Scene]
    val_points: list[np.ndarray]
    test_scenes: list[Scene]
    points_info: dict[str, Any]
    tracker: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best: float = -math.inf
    train_time: float = 0.0
    train_images: int = 0
    last_logits: torch.Tensor | None = None
    last_target: torch.Tensor | None = None  # the clicks in the student's view of the last step
    norm: BandNorm | None = None
    lock: Any = None
    click_example: tuple[Scene, np.ndarray | None] | None = None  # drawn in the export's samples
    label_prior: list[float] | None = None  # class mix of the labels the loss sees (pointseg/prior.py)
    frozen: set[str] = field(default_factory=set)  # encoder parameters that never train (model.freeze_levels)

    def data_record(self) -> dict[str, Any]:
        """What predict needs to read a new scene as training read its own (stored in best.pt)."""
        s = self.spec
        return {"bands": list(s.bands) if s.bands else None, "in_channels": s.num_bands,
                "image_nodata": list(s.image_nodata) if s.image_nodata else None,
                "norm": (self.norm or BandNorm.identity(s.num_bands)).state(), "colors": s.display_colors()}

    @property
    def eval_kw(self) -> dict[str, Any]:
        e = self.cfg.eval
        return dict(window=e.window, overlap=e.overlap, batch_size=e.batch_size, device=self.device, style=self.style)


SELECT_METRIC = {"last": None, "val_points": "val_points/miou", "val_dense": "val/miou"}


def read_inputs(cfg: Config) -> RunInputs:
    """What a run trains and tests on (pointseg/inputs.py), and for a self-trained run its teacher's confident
    labels with the clicks on top (pointseg/selftrain.py)."""
    inputs = RunInputs.read(cfg)
    if cfg.selftrain.teacher:
        inputs.pseudo, inputs.points_info["selftrain"] = pseudo_targets(cfg, inputs.train, inputs.targets)
    return inputs


def _prepare(cfg: Config, run_dir: Path, progress: bool) -> _Run:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    inputs = read_inputs(cfg)  # before the run directory exists: bad input leaves no half-made run behind
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()  # the same run launched twice: the second stops here, writing nothing
    try:
        return _prepare_locked(cfg, run_dir, inputs, device, lock)
    except BaseException:
        lock.release()
        raise


def _crop_stages(cfg: Config, inputs: RunInputs) -> tuple[list[tuple[CropSampler, int | None]], Any]:
    """The training crops, as (sampler, steps) stages: early_crop_size for early_crop_steps, if set, then crop_size
    (and the histogram style they were matched to, if any)."""
    style = None
    if cfg.train.histogram_match:
        style = HistogramStyle.fit([s.image for s in inputs.train], cfg.train.histogram_scope)
    images = style.restyle(inputs.train) if style else [s.image for s in inputs.train]
    # the same supervised crops with or without the semi-supervised loss, so that its gain is measured paired;
    # it learns from the unlabelled pixels of these crops
    # with an unlabelled-pixel method on points, the dense masks ride along for logged diagnostics only
    # (pseudo-label precision and coverage); they never reach a loss or the checkpoint selection
    diagnostic = ([s.mask for s in inputs.train] if (cfg.semi.weight > 0 and cfg.points.supervision == "points")
                  else None)
    t = cfg.train
    sizes = ([(t.early_crop_size, t.early_crop_steps)] if t.early_crop_steps else []) + [(t.crop_size, None)]
    stages = [(CropSampler(images, inputs.loss_targets, size, t.batch_size, cfg.seed, augment=t.augment,
                           skip_empty=True, diagnostic=diagnostic), steps) for size, steps in sizes]
    return stages, style


def _prepare_locked(cfg: Config, run_dir: Path, inputs: RunInputs, device: torch.device, lock) -> _Run:
    write_inputs(cfg, run_dir, inputs)
    stages, style = _crop_stages(cfg, inputs)
    model = build_model(cfg.model.arch, cfg.model.encoder, inputs.spec.num_classes, cfg.model.encoder_weights,
                        cfg.model.decoder_channels, in_channels=inputs.spec.num_bands).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        if cfg.train.reduction_batchnorm and device.type == "cpu":  # a CPU kernel's cost; CUDA keeps cuDNN's
            use_reduction_batchnorm(model)
    try:
        frozen = frozen_parameter_names(model, cfg.model.freeze_levels)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                            fused=True if cfg.train.fused_adamw else None)
    total_steps = cfg.train.epochs * cfg.train.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps, cfg.train.warmup_steps))
    criterion = PartialFocalCE(cfg.loss.gamma, IGNORE_INDEX, cfg.loss.class_weights, cfg.train.compile_loss).to(device)
    r = _Run(cfg, run_dir, device, inputs.spec, model, criterion, opt, sched, build_unlabelled(cfg.semi, model), None,
             torch.Generator().manual_seed(cfg.seed), style, inputs.val, inputs.val_maps, inputs.test,
             inputs.points_info, norm=band_norm(cfg), lock=lock, frozen=frozen)
    from .samples import click_example_index

    first = click_example_index(inputs.train)
    r.click_example = (inputs.train[first], inputs.targets[first] if cfg.points.supervision == "points" else None)
    if any((t != IGNORE_INDEX).any() for t in inputs.loss_targets):  # else nothing to count (and nothing to learn)
        r.label_prior = label_prior(inputs.loss_targets, inputs.spec.num_classes).tolist()
    _resume(r)
    r.batches = staged_batches(stages, start_step=r.start_epoch * cfg.train.steps_per_epoch)
    if cfg.wandb.mode != "disabled":
        r.tracker = Tracker(cfg.wandb.mode, cfg.wandb.project, run_dir, f"{cfg.name}-seed{cfg.seed}",
                            cfg.to_dict(), cfg.wandb.group, cfg.wandb.tags)
    return r


def _resume(r: _Run) -> None:
    last_path = r.run_dir / "last.pt"
    if not last_path.exists():
        return
    try:
        state = load_checkpoint_file(last_path, r.device)
    except CorruptFileError as e:
        raise TrainingError(f"{e}. It is the state to resume from; delete it to train this run again from the "
                            "start (the finished epochs' metrics.jsonl is kept)") from None
    r.model.load_state_dict(state["model"])
    r.opt.load_state_dict(state["optimizer"])
    r.sched.load_state_dict(state["scheduler"])
    if r.teacher is not None and state.get("teacher"):
        r.teacher.load_state_dict(state["teacher"])
    r.start_epoch, r.best = state["epoch"] + 1, state["best"]
    r.gen.set_state(state["generator"].cpu())  # a CPU generator; the checkpoint was read onto the run's device
    r.history = read_jsonl(r.run_dir / "metrics.jsonl")[:r.start_epoch]
    log.info("%s: resuming after epoch %d", r.run_dir, state["epoch"] + 1)


def _layout(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else x


def _weak_view(x: torch.Tensor, gen: torch.Generator, cfg: Config) -> torch.Tensor:
    """The crop as a run without a teacher sees it (train.augment's jitter), for the clicks' own forward pass."""
    return photometric_jitter(x, gen, cfg.train.jitter) if cfg.train.augment else x


def _train_step(r: _Run, x: torch.Tensor, y: torch.Tensor, global_step: int) -> tuple[float, float]:
    """One optimiser step; returns (total loss, supervised loss)."""
    cfg = r.cfg
    # with a teacher, the student's jitter is the strong view and the clean crop the weak one
    x_in, y_clicks = x, y
    if r.teacher is not None:  # a method whose student view moves pixels moves the clicks with them
        x_in, y = r.teacher.prepare(x, y, r.gen)
    strong = r.teacher is not None and r.teacher.strong_view
    x_in = photometric_jitter(x_in, r.gen, cfg.semi.strong_jitter) if strong else _weak_view(x_in, r.gen, cfg)
    logits = r.model(_layout(x_in, cfg))
    if strong and cfg.semi.clicks_view == "weak":  # the FixMatch paper's split: clicks on the weak view
        sup = r.criterion(r.model(_layout(_weak_view(x, r.gen, cfg), cfg)), y_clicks)
    else:
        sup = r.criterion(logits, y)
    loss = sup
    if r.teacher is not None:
        # the method's loss is unweighted: its weight and ramp-up are applied here, once
        factor = unlabelled_scale(cfg.semi, global_step / cfg.train.steps_per_epoch)
        loss = loss + factor * r.teacher.loss(logits, x, y)
    if not torch.isfinite(loss):
        epoch, step = divmod(global_step, cfg.train.steps_per_epoch)
        raise TrainingError(f"{r.run_dir}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                            "stopping (try a lower train.lr)")
    r.opt.zero_grad(set_to_none=True)
    loss.backward()
    r.opt.step()
    r.sched.step()
    if r.teacher is not None:
        r.teacher.update(r.model, global_step)
    r.last_logits, r.last_target = logits.detach(), y
    return loss.item(), sup.item()


@torch.no_grad()
def unlabelled_diagnostics(logits: torch.Tensor, target: torch.Tensor, dense: torch.Tensor,
                           pseudo: torch.Tensor | None, names: Sequence[str] = ()) -> dict[str, float]:
    """Against the dense masks, on the pixels without a click: the student's accuracy, and the share of them the
    teacher pseudo-labelled (coverage) and how many of those labels are right (precision). Per class (``names``
    in class-index order): the share of the pseudo-labels naming it, its share of the pseudo-labelled pixels in
    truth and of all unclicked pixels in truth: a teacher that feeds the student more of one class shows either by
    naming it wrongly or by labelling mostly where it is. Logged, never used."""
    free = (target == IGNORE_INDEX) & (dense != IGNORE_INDEX)
    out = {"diag/unlabelled_acc": float((logits.argmax(1) == dense)[free].float().mean()) if free.any() else math.nan}
    if pseudo is not None:
        used = free & (pseudo != IGNORE_INDEX)
        out["diag/pseudo_coverage"] = float(used.sum() / free.sum().clamp_min(1))
        out["diag/pseudo_precision"] = float((pseudo == dense)[used].float().mean()) if used.any() else math.nan
        # one bincount per key, not a comparison per class: this runs on every training step
        for key, labels in (("pseudo_share", pseudo[used]), ("pseudo_true_share", dense[used]),
                            ("unlabelled_share", dense[free])):
            shares = (torch.bincount(labels, minlength=len(names))[:len(names)] / labels.numel()).tolist() \
                if labels.numel() else [math.nan] * len(names)
            out.update({f"diag/{key}/{name}": share for name, share in zip(names, shares)})
    return out


def _train_epoch(r: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    cfg = r.cfg
    r.model.train()
    set_encoder_trainable(r.model, epoch >= cfg.model.freeze_encoder_epochs, r.frozen)
    losses, sup_losses, pseudo, diags = [], [], [], []
    steps = bar(range(cfg.train.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                disable=not progress)
    t0 = time.perf_counter()
    for step in steps:
        x, y, *dense = next(r.batches)
        loss, sup = _train_step(r, x.to(r.device), y.to(r.device), epoch * cfg.train.steps_per_epoch + step)
        losses.append(loss)
        sup_losses.append(sup)
        if r.teacher is not None:
            pseudo.append(r.teacher.last_fraction)
        if dense:  # in the student's view (a method that moves pixels moves the dense masks alike)
            view = r.teacher.to_student
            diags.append(unlabelled_diagnostics(r.last_logits, r.last_target, view(dense[0].to(r.device)),
                                                r.teacher.last_pseudo, r.spec.class_names))
        steps.set_postfix(loss=f"{loss:.3f}")
    dt = time.perf_counter() - t0
    r.train_time += dt
    r.train_images += cfg.train.steps_per_epoch * cfg.train.batch_size
    diag = {k: float(np.nanmean([d[k] for d in diags])) for k in diags[0]} if diags else {}
    return {"epoch": epoch + 1, "step": (epoch + 1) * cfg.train.steps_per_epoch,
            "train/loss": float(np.mean(losses)), "train/sup_loss": float(np.mean(sup_losses)),
            **({"train/pseudo_fraction": float(np.mean(pseudo))} if pseudo else {}), **diag,
            "train/lr": r.sched.get_last_lr()[0],
            "train/img_per_s": cfg.train.steps_per_epoch * cfg.train.batch_size / dt,
            "train/seconds": dt}


def _validate(r: _Run, progress: bool) -> dict[str, float]:
    """Dense val mIoU (selects only the ceiling; a diagnostic for points) and mIoU on the val clicks."""
    names = list(r.spec.class_names)
    t0 = time.perf_counter()
    dense, points = scene_confusions(r.model, r.val_scenes, r.spec.num_classes, progress=progress,
                                     point_maps=r.val_points, desc="eval val", **r.eval_kw)
    return {**scores(np.sum(dense, axis=0), names, "val/"), **scores(points, names, "val_points/"),
            "val/seconds": time.perf_counter() - t0}


def _end_epoch(r: _Run, epoch: int, row: dict[str, Any]) -> None:
    """Keep the selected weights in best.pt, the resumable state in last.pt, the curve in metrics.jsonl."""
    cfg = r.cfg
    key = SELECT_METRIC[cfg.eval.select]
    last_epoch = epoch + 1 == cfg.train.epochs
    improved = last_epoch if key is None else (key in row and row[key] > r.best)
    if improved:
        r.best = row[key] if key else row.get("val/miou", math.nan)
        atomic_torch_save({"model": r.model.state_dict(), "config": cfg.to_dict(), "epoch": epoch + 1,
                           "select": cfg.eval.select, "selected_by": r.best, "num_classes": r.spec.num_classes,
                           "class_names": list(r.spec.class_names),
                           "style": r.style.state() if r.style else None, "data": r.data_record(),
                           "label_prior": r.label_prior},
                          r.run_dir / "best.pt")
    row["selected"] = bool(improved)
    r.history.append(row)
    write_jsonl(r.run_dir / "metrics.jsonl", r.history)
    atomic_torch_save({"model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
                       "scheduler": r.sched.state_dict(), "epoch": epoch, "best": r.best,
                       "generator": r.gen.get_state(),
                       "teacher": r.teacher.state_dict() if r.teacher else None}, r.run_dir / "last.pt")
    if r.tracker:
        r.tracker.log(row, step=row["step"])
    log.info("epoch %d: loss %.4f val mIoU %s%s", epoch + 1, row["train/loss"],
             f"{row['val/miou']:.4f}" if "val/miou" in row else "—", " (selected)" if improved else "")


def _test(r: _Run, progress: bool) -> dict[str, Any]:
    """Test metrics of the selected weights: the whole split, each test tile, and every image's confusion matrix."""
    ckpt = load_checkpoint_file(r.run_dir / "best.pt", r.device)
    r.model.load_state_dict(ckpt["model"])
    names = list(r.spec.class_names)
    t0 = time.perf_counter()
    dense, _ = scene_confusions(r.model, r.test_scenes, r.spec.num_classes, tta=r.cfg.eval.tta, progress=progress,
                                desc="eval test", **r.eval_kw)
    out = {**split_record(dense, r.test_scenes, names, "test/"), "test/seconds": time.perf_counter() - t0}
    out["best_epoch"] = ckpt["epoch"]
    return out


def _samples(r: _Run) -> dict[str, Any] | None:
    """Thumbnails of a few predictions for the export (the report's qualitative panel). A picture is not worth a
    lost run: a failure here is logged and the export is written without it."""
    from .samples import make_samples

    try:
        return make_samples(r.model, r.test_scenes, r.eval_kw, list(r.spec.class_names), r.spec.display_colors(),
                            r.click_example)
    except Exception as e:  # noqa: BLE001
        log.warning("%s: no sample predictions in the export (%s: %s)", r.run_dir, type(e).__name__, e)
        return None


def _val_panels(r: _Run, n: int = 2) -> list[tuple[np.ndarray, str]]:
    """A few val images with their clicks, the prediction of the tested weights, the truth and the errors."""

    colors = r.spec.display_colors()
    out = []
    images = r.style.restyle(r.val_scenes) if r.style is not None else [s.image for s in r.val_scenes]
    for s, pts, image in list(zip(r.val_scenes, r.val_points, images))[:n]:
        pred = predict_probs(r.model, image, r.cfg.eval.window, r.cfg.eval.overlap, r.cfg.eval.batch_size,
                             device=r.device).argmax(0).numpy()
        out.append((prediction_panel(image, pts, pred, s.mask, colors),
                    f"{s.name}: image + val clicks | prediction | truth | errors (red)"))
    return out


# a full disk, a read-only or foreign folder: the user's to fix, then the same command resumes
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def fit(cfg: Config, run_dir: str | Path | None = None, callback: EpochCallback | None = None,
        progress: bool = True) -> RunResult:
    """Train, pick the weights by ``eval.select``, test them. Resumes a killed run; a finished one is returned."""
    run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
    try:
        return _fit(cfg, run_dir, callback, progress)
    except RunLockedError as e:
        raise TrainingError(str(e)) from None
    except OSError as e:
        if e.errno not in _STORAGE_ERRNOS:
            raise
        raise TrainingError(f"{e.filename or run_dir}: cannot write ({e.strerror}). Every file is written whole or "
                            "not at all, and what finished is kept: free space or fix the permissions, then run "
                            "the same command again to resume") from e


def _export_again_if_missing(cfg: Config, res: RunResult) -> None:
    """A finished run whose export is gone (results/ cleaned, or the run finished where results/ was replaced) is
    exported again from its run directory, so that a study never loses a finished run: the copy the run kept
    (``export.json``) when there is one, else rebuilt from its files, without the machine and the thumbnails, which
    a run directory of an older version did not keep."""
    if not cfg.export_dir:
        return
    path = export_path(cfg.export_dir, cfg.name, cfg.seed)
    if path.exists():
        return
    kept = res.run_dir / "export.json"
    if kept.exists():
        atomic_write_text(path, kept.read_text())
        log.warning("%s: its export was missing; copied again from %s", path, kept)
        return
    points_info = json.loads((res.run_dir / "points.json").read_text())
    export_run(path, cfg.to_dict(), res.final, res.history, points_info, res.final.get("code") or {})
    log.warning("%s: its export was missing; written again from the run directory (no thumbnails)", path)


def _fit(cfg: Config, run_dir: Path, callback: EpochCallback | None, progress: bool) -> RunResult:
    final_path = run_dir / "final.json"
    check_protocol(cfg)
    check_same_run(cfg, run_dir)
    if final_path.exists():
        log.info("%s: already finished, returning its results", run_dir)
        result = RunResult(run_dir, json.loads(final_path.read_text()), read_jsonl(run_dir / "metrics.jsonl"))
        _export_again_if_missing(cfg, result)
        return result
    r = _prepare(cfg, run_dir, progress)
    try:
        for epoch in range(r.start_epoch, cfg.train.epochs):
            row = _train_epoch(r, epoch, progress)
            if (epoch + 1) % cfg.eval.val_every == 0 or epoch + 1 == cfg.train.epochs:
                row.update(_validate(r, progress))
            _end_epoch(r, epoch, row)
            if callback is not None:
                callback(epoch + 1, row)
        test = _test(r, progress)
        selected = [row for row in r.history if row.get("selected")][-1]
        final = {"name": cfg.name, "seed": cfg.seed, "select": cfg.eval.select,
                 **{k: v for k, v in selected.items() if k.startswith(("val/", "val_points/"))}, **test,
                 "train/img_per_s": r.train_images / r.train_time if r.train_time else None,
                 "train/seconds": r.train_time,
                 "val/seconds_total": sum(row.get("val/seconds", 0.0) for row in r.history),
                 "points_total": r.points_info.get("points_total"),
                 "labelled_pixels": r.points_info.get("labelled_pixels", r.points_info.get("points_total")),
                 "code": r.points_info["code"]}
        # the export is kept in the run directory too (before final.json marks the run finished), so that an
        # export lost later is copied back whole, thumbnails and machine included (_export_again_if_missing)
        kept = export_run(run_dir / "export.json", cfg.to_dict(), final, r.history, r.points_info,
                          r.points_info["code"], _samples(r), machine(str(r.device)))
        write_json(final_path, final)
        (run_dir / "last.pt").unlink(missing_ok=True)  # the run is done; best.pt is what remains useful
        if cfg.export_dir:
            atomic_write_text(export_path(cfg.export_dir, cfg.name, cfg.seed), kept.read_text())
        if r.tracker:
            r.tracker.summary({k: v for k, v in final.items() if not isinstance(v, (dict, list))})
            r.tracker.images("val/predictions", _val_panels(r), step=r.history[-1]["step"])
    except BaseException:
        if r.tracker:
            r.tracker.finish(exit_code=1)
        raise
    finally:
        r.lock.release()
    if r.tracker:
        r.tracker.finish()
    return RunResult(run_dir, final, r.history)
