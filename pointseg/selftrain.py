"""One round of self-training: a finished points run labels the training pixels it is sure of, and a new run
trains on those labels with the clicks on top (pseudo-labelling, Lee 2013; for segmentation e.g. Zou et al.,
ECCV 2018).

The teacher must be a points run on the same training tiles: then no dense mask reaches the student, neither
directly nor through the teacher's weights. Where the teacher's softmax probability is at least
``selftrain.threshold`` (or its class's own bar, with ``selftrain.proportion``) its class becomes the label;
elsewhere the pixel stays unlabelled (the loss ignores it, an unlabelled-pixel method such as the gated CRF still
sees it); a clicked pixel keeps its click. The dense masks measure the pseudo-labels' coverage and precision for
the run's record (points.json), a diagnostic never used.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, ConfigError
from .data.dataset import Scene
from .data.raster import IGNORE_INDEX
from .infer import predict_probs, resolve_device
from .prior import calibrated

log = logging.getLogger("pointseg")


def teacher_location(cfg: Config) -> Path:
    """Where ``selftrain.teacher`` points for this run's seed ("{seed}" filled in); it may not exist yet."""
    return Path(cfg.selftrain.teacher.replace("{seed}", str(cfg.seed)))


def teacher_path(cfg: Config) -> Path:
    """The teacher's best.pt for this run's seed; a clear error when it is not there."""
    from .checkpoint import checkpoint_path

    try:
        return checkpoint_path(teacher_location(cfg))
    except FileNotFoundError as e:
        raise ConfigError(f"selftrain.teacher: {e}. The teacher's weights must be on this machine (a committed "
                          "export carries none): train the teacher run first, then this one") from None


def check_teacher(cfg: Config, teacher: Config, path: Path) -> None:
    """The student may learn only from a model that saw what the student may see."""
    if teacher.points.supervision != "points":
        raise ConfigError(f"selftrain.teacher: {path} was trained on dense masks (points.supervision="
                          f"{teacher.points.supervision}); a points run may only learn from a points run")
    mine, theirs = cfg.data, teacher.data
    if (mine.dataset, list(mine.train_groups), mine.scale) != (theirs.dataset, list(theirs.train_groups), theirs.scale):
        raise ConfigError(f"selftrain.teacher: {path} trained on {theirs.dataset} groups {theirs.train_groups} at "
                          f"scale {theirs.scale}, this run on {mine.dataset} groups {mine.train_groups} at scale "
                          f"{mine.scale}; the teacher must have trained on this run's training images alone")
    if (teacher.points.n_per_class, teacher.points.strategy, teacher.points.seed, teacher.seed) != (
            cfg.points.n_per_class, cfg.points.strategy, cfg.points.seed, cfg.seed):
        log.warning("%s: the teacher's clicks (%d per class, %s, seed %s) are not this run's (%d per class, %s, seed "
                    "%s)", path, teacher.points.n_per_class, teacher.points.strategy,
                    teacher.points.seed if teacher.points.seed is not None else teacher.seed, cfg.points.n_per_class,
                    cfg.points.strategy, cfg.points.seed if cfg.points.seed is not None else cfg.seed)


def pseudo_label(probs: np.ndarray, clicks: np.ndarray, threshold: float | np.ndarray,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """C×h×w probabilities + the h×w click map → the label map the student trains on; ``threshold`` is one bar
    or one per class (the bar of the class the teacher predicts)."""
    return confident_label(probs.argmax(0), probs.max(0), clicks, threshold, valid)


def confident_label(arg: np.ndarray, conf: np.ndarray, clicks: np.ndarray, threshold: float | np.ndarray,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """The teacher's class ``arg`` where its probability ``conf`` reaches that class's bar, the clicks on top."""
    thr = np.asarray(threshold, np.float32)
    label = arg.astype(np.int64)
    label[conf < (thr[arg] if thr.ndim else thr)] = IGNORE_INDEX
    if valid is not None:
        label[~valid] = IGNORE_INDEX
    clicked = clicks != IGNORE_INDEX
    label[clicked] = clicks[clicked]
    return label


def class_thresholds(args: list[np.ndarray], confs: list[np.ndarray], valids: list[np.ndarray | None],
                     n_classes: int, proportion: float, cap: float) -> np.ndarray:
    """Class-balanced bars: for each class, the probability its most confident ``proportion`` of the pixels the
    teacher assigns to it reach, pooled over all images, never above ``cap`` (a class nobody is assigned keeps it)."""
    thr = np.full(n_classes, cap, np.float32)
    for k in range(n_classes):
        pooled = np.concatenate([c[(a == k) if v is None else (a == k) & v] for a, c, v in zip(args, confs, valids)])
        if pooled.size:
            thr[k] = min(cap, float(np.quantile(pooled, 1 - proportion)))
    return thr


def diagnostics(labels: list[np.ndarray], clicks: list[np.ndarray], masks: list[np.ndarray],
                class_names: list[str] | None = None) -> dict[str, Any]:
    """Against the dense masks, over the labelled pixels without a click: the share that got a pseudo-label
    (coverage) and the share of those that is right (precision); with ``class_names`` also per class (coverage of
    the pixels truly of the class, precision of the pseudo-labels saying it), which shows a class the teacher
    leaves out or claims wrongly. Recorded, never used."""
    n = len(class_names) if class_names else 0
    joint = np.zeros((max(n, 1), max(n, 1)), np.int64)  # [true class, pseudo class] over the covered pixels
    free_per_class = np.zeros(max(n, 1), np.int64)
    covered = right = free = 0
    for lab, c, m in zip(labels, clicks, masks):
        f = (c == IGNORE_INDEX) & (m != IGNORE_INDEX)
        used = f & (lab != IGNORE_INDEX)
        free, covered, right = free + int(f.sum()), covered + int(used.sum()), right + int((lab == m)[used].sum())
        if n:
            free_per_class += np.bincount(m[f].astype(np.int64), minlength=n)[:n]
            np.add.at(joint, (m[used].astype(np.int64), lab[used]), 1)
    out: dict[str, Any] = {"pseudo_coverage": covered / max(free, 1),
                           "pseudo_precision": right / covered if covered else float("nan")}
    if n:
        said = joint.sum(0)
        out["per_class"] = {name: {"coverage": float(joint[k].sum() / free_per_class[k]) if free_per_class[k] else None,
                                   "precision": float(joint[k, k] / said[k]) if said[k] else None}
                            for k, name in enumerate(class_names)}
    return out


def pseudo_targets(cfg: Config, scenes: list[Scene],
                   clicks: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """The training label maps from ``cfg.selftrain.teacher``, and the record of where they came from."""
    from .checkpoint import load_model

    path = teacher_path(cfg)
    device = resolve_device(cfg.train.device)
    model, tcfg, ckpt = load_model(path, device)
    check_teacher(cfg, tcfg, path)
    if ckpt.get("style"):
        raise ConfigError(f"selftrain.teacher: {path} trained on histogram-matched images; self-training from such "
                          "a teacher is not supported")
    e, st = cfg.eval, cfg.selftrain
    probs = (predict_probs(model, s.image, e.window, e.overlap, e.batch_size, st.tta, device) for s in scenes)
    names, prior = list(ckpt["class_names"]), {}
    if st.prior:  # EM needs every image's probabilities at once; otherwise one image's at a time is enough
        probs = list(probs)
        prior = _correct_prior(model, probs, scenes, tcfg, ckpt, names, device)
    args, confs = [], []
    for p in probs:
        conf, arg = p.max(0)
        args.append(arg.numpy().astype(np.uint8))
        confs.append(conf.numpy())
    valids = [s.valid for s in scenes]
    thr = (class_thresholds(args, confs, valids, len(names), st.proportion, st.threshold) if st.proportion
           else np.float32(st.threshold))
    labels = [confident_label(a, c, k, thr, v) for a, c, k, v in zip(args, confs, clicks, valids)]
    diag = diagnostics(labels, clicks, [s.mask for s in scenes], names)
    log.info("%s: pseudo-labels on %.0f %% of the unclicked pixels (right on %.1f %% of them: a diagnostic)", path,
             100 * diag["pseudo_coverage"], 100 * diag["pseudo_precision"])
    record = {"teacher": str(path), "teacher_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "teacher_name": tcfg.name, "teacher_seed": tcfg.seed, "threshold": st.threshold,
              **({"tta": True} if st.tta else {}),
              **({"proportion": st.proportion, "class_thresholds": dict(zip(names, map(float, thr)))}
                 if st.proportion else {}),
              **prior, "pseudo_pixels": int(sum(((lab != IGNORE_INDEX) & (c == IGNORE_INDEX)).sum()
                                       for lab, c in zip(labels, clicks))),
              "diagnostic": diag}
    return labels, record


def _correct_prior(model, probs: list, scenes: list[Scene], tcfg: Config, ckpt: dict, names: list[str],
                   device) -> dict[str, Any]:
    """The teacher's probabilities (changed in place), calibrated on its val clicks and re-weighted to the class
    mix EM finds in these training images; returns what was fitted, for the record."""
    from .inputs import load_split

    e = tcfg.eval
    shift = calibrated(model, tcfg, ckpt, load_split(tcfg, "val"), device, window=e.window, overlap=e.overlap,
                       batch_size=e.batch_size).shifted_to(scenes, probs)
    for i, p in enumerate(probs):
        probs[i] = shift.apply(p)
    log.info("teacher calibrated (T %.2f) and its class mix %s → %s (EM on the training images)", shift.temperature,
             np.round(shift.source, 3).tolist(), np.round(shift.target, 3).tolist())
    return {"prior": shift.record(names)}
