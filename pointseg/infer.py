"""Whole-image inference: sliding window, D4 test-time augmentation, ensembles, full-resolution metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import ConfusionMatrix, scores
from .progress import bar

_STRIDE_MULTIPLE = 32  # smp encoders downsample 5 times


def _positions(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    pos = list(range(0, length - window, stride))
    return pos + [length - window]


def _d4_forward(x: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def _d4_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    if k >= 4:
        x = x.flip(-1)
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


@torch.inference_mode()
def _window_probs(models: Sequence[torch.nn.Module], x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Mean softmax over models and (with tta) the 8 D4 transforms; x is N×3×H×W, H and W multiples of 32."""
    total = None
    ks = range(8) if tta else (0,)
    x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's faster layout; same numbers either way
    for model in models:
        for k in ks:
            p = _d4_inverse(model(_d4_forward(x, k)).float().softmax(1), k)
            total = p if total is None else total + p
    return total / (len(models) * len(ks))


@torch.inference_mode()
def resolve_device(name: str) -> torch.device:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":  # full fp32 like the CPU runs: a study may mix machines, TF32 would be a second change
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return device


def predict_probs(models: torch.nn.Module | Sequence[torch.nn.Module], image: np.ndarray, window: int = 512,
                  overlap: float = 0.25, batch_size: int = 4, tta: bool = False,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Class probabilities C×h×w for an h×w×3 uint8 image, by overlapping windows averaged where they meet."""
    if isinstance(models, torch.nn.Module):
        models = [models]
    for m in models:
        m.eval()
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    h, w = image.shape[:2]
    win = max(_STRIDE_MULTIPLE, window // _STRIDE_MULTIPLE * _STRIDE_MULTIPLE)
    # pad so that every window is full and a multiple of 32
    ph = max(h, win) if h >= win else -(-h // _STRIDE_MULTIPLE) * _STRIDE_MULTIPLE
    pw = max(w, win) if w >= win else -(-w // _STRIDE_MULTIPLE) * _STRIDE_MULTIPLE
    wh, ww = min(win, ph), min(win, pw)
    x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
    x = F.pad(x, (0, pw - w, 0, ph - h), mode="reflect" if (pw - w < w and ph - h < h) else "constant")
    stride_h, stride_w = max(1, int(wh * (1 - overlap))), max(1, int(ww * (1 - overlap)))
    boxes = [(y, xx) for y in _positions(ph, wh, stride_h) for xx in _positions(pw, ww, stride_w)]
    acc = count = None
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        batch = torch.stack([x[:, y:y + wh, xx:xx + ww] for y, xx in chunk]).to(device)
        probs = _window_probs(models, batch, tta).cpu()
        if acc is None:
            acc = torch.zeros(probs.shape[1], ph, pw)
            count = torch.zeros(1, ph, pw)
        for p, (y, xx) in zip(probs, chunk):
            acc[:, y:y + wh, xx:xx + ww] += p
            count[:, y:y + wh, xx:xx + ww] += 1
    return (acc / count)[:, :h, :w]


def to_full_resolution(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels H×W at the original resolution: probabilities resized bilinearly, then argmax."""
    if tuple(probs.shape[1:]) != tuple(size):
        probs = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    # argmax over a contiguous last axis is several times faster than over the leading one on CPU
    return probs.permute(1, 2, 0).contiguous().argmax(-1)


def scene_confusions(models, scenes, num_classes: int, window: int = 512, overlap: float = 0.25,
                     batch_size: int = 4, tta: bool = False, device="cpu", style=None, progress: bool = True,
                     point_maps: Sequence[np.ndarray] | None = None, desc: str = "eval",
                     corrections: Sequence | None = None
                     ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One confusion matrix per scene at the masks' full resolution (rows = truth), and with ``point_maps``
    (sparse label maps at the working scale) one matrix over those clicks, from the same predictions;
    ``corrections``: per scene, a label-shift correction (pointseg/prior.py: PriorShift), or None."""
    dense, points = [], ConfusionMatrix(num_classes) if point_maps is not None else None
    images = style.restyle(scenes) if style is not None else [s.image for s in scenes]
    for i, (s, image) in enumerate(zip(bar(scenes, desc=desc, leave=False, disable=not progress), images)):
        probs = predict_probs(models, image, window, overlap, batch_size, tta, device)
        if corrections is not None and corrections[i] is not None:
            probs = corrections[i].apply(probs)
        cm = ConfusionMatrix(num_classes)
        cm.update(to_full_resolution(probs, s.full_mask.shape), torch.from_numpy(s.full_mask))
        dense.append(cm.mat.numpy())
        if points is not None:
            labelled = torch.from_numpy(point_maps[i] != cm.ignore_index)
            points.update(probs.argmax(0)[labelled], torch.from_numpy(point_maps[i])[labelled])
    return dense, (points.mat.numpy() if points is not None else None)


def split_record(dense: Sequence[np.ndarray], scenes, class_names: list[str], prefix: str = "test/") -> dict:
    """The metrics a run exports for a split from its per-scene confusion matrices: the whole split, each group
    (tile), the summed matrix and every image's (so a report can bootstrap over images and seeds)."""
    out = scores(np.sum(dense, axis=0), class_names, prefix)
    for group in dict.fromkeys(s.group for s in scenes):
        mats = [m for m, s in zip(dense, scenes) if s.group == group]
        out[f"{prefix}group/{group}/miou"] = scores(np.sum(mats, axis=0), class_names)["miou"]
    out[f"{prefix}confusion"] = np.sum(dense, axis=0).tolist()
    out[f"{prefix}per_image_confusion"] = {s.name: np.asarray(m).tolist() for s, m in zip(scenes, dense)}
    return out


def evaluate(models, scenes, num_classes: int, class_names: list[str], prefix: str, window: int = 512,
             overlap: float = 0.25, batch_size: int = 4, tta: bool = False, device="cpu",
             style=None, progress: bool = True) -> dict[str, float]:
    """Metrics over a split: one confusion matrix (the sum of the scenes') at the masks' full resolution."""
    dense, _ = scene_confusions(models, scenes, num_classes, window, overlap, batch_size, tta, device, style,
                                progress, desc=f"eval {prefix.rstrip('/')}")
    return scores(np.sum(dense, axis=0), class_names, prefix)
