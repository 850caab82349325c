"""Confusion matrix over a whole split → per-class IoU, macro mIoU, overall accuracy.

One matrix is accumulated over every pixel of the split (not a mean of per-image scores), so a small image
weighs by its pixel count. Ignored pixels are excluded. mIoU is the macro mean over the classes that occur
in the ground truth or the prediction of the split; a class absent from both has no IoU (NaN) and is left out.
"""

from __future__ import annotations

import numpy as np
import torch


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # rows = truth, cols = prediction

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        pred = torch.as_tensor(pred).reshape(-1).long()
        target = torch.as_tensor(target).reshape(-1).long()
        if pred.shape != target.shape:
            raise ValueError(f"prediction has {pred.numel()} pixels, target {target.numel()}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() and (target.max() >= self.num_classes or target.min() < 0):
            raise ValueError(f"target holds class ids outside [0, {self.num_classes})")
        idx = target * self.num_classes + pred
        self.mat += torch.bincount(idx, minlength=self.num_classes**2).reshape(self.num_classes, -1).cpu()

    def compute(self, class_names: list[str] | None = None, prefix: str = "") -> dict[str, float]:
        return scores(self.mat.numpy(), class_names, prefix)


def scores(mat: np.ndarray, class_names: list[str] | None = None, prefix: str = "") -> dict[str, float]:
    mat = mat.astype(np.float64)
    tp = np.diag(mat)
    union = mat.sum(0) + mat.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    names = class_names or [str(i) for i in range(len(tp))]
    out = {
        f"{prefix}miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        f"{prefix}oa": float(tp.sum() / mat.sum()) if mat.sum() else float("nan"),
    }
    out.update({f"{prefix}iou/{n}": float(v) for n, v in zip(names, iou)})
    return out
