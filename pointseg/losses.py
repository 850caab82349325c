"""Partial focal cross-entropy: the focal loss of a softmax classifier, averaged over labelled pixels only.

    pfCE = Σ_i M_i · w_{y_i} · (1 - p_{i,y_i})^γ · (-log p_{i,y_i})  /  Σ_i M_i · w_{y_i}

M_i = 1 on a labelled pixel (target ≠ ignore_index), w = class weights (1 when none). At γ = 0 this is exactly
``F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index)``. Focal loss: Lin et al., "Focal Loss
for Dense Object Detection", ICCV 2017.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be N×C×H×W, got shape {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"target must be N×H×W = {(logits.shape[0], *logits.shape[2:])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}; pass class ids, not one-hot"
        )
    if target.dtype != torch.int64:
        raise ValueError(f"target must be int64 class ids, got {target.dtype}; use target.long()")
    if weight is not None and weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must have one entry per class ({logits.shape[1]}), got {tuple(weight.shape)}")


def partial_focal_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Partial focal cross-entropy over the labelled pixels.

    Args:
        logits: raw scores, N×C×H×W, any float dtype (computed in float32).
        target: N×H×W int64, a class id on labelled pixels and ``ignore_index`` elsewhere.
        gamma: focusing parameter; 0 gives plain cross-entropy.
        ignore_index: the value of unlabelled pixels.
        weight: optional per-class weights, shape C.

    Returns:
        A scalar. A batch without one labelled pixel gives 0 that still backpropagates (zero gradients).
    """
    _check(logits, target, weight)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    labelled = target != ignore_index
    n_classes = logits.shape[1]
    bad = labelled & ((target < 0) | (target >= n_classes))
    if bad.any():
        raise ValueError(f"target holds class ids outside [0, {n_classes}) (e.g. {target[bad][0].item()}) "
                         f"that are not ignore_index={ignore_index}")
    safe_target = torch.where(labelled, target, torch.zeros_like(target))
    # log-softmax in float32: stable for large logits and for half-precision inputs
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, safe_target.unsqueeze(1)).squeeze(1)  # N×H×W
    focal = -logp_t if gamma == 0 else -((1.0 - logp_t.exp()).clamp_min(0.0) ** gamma) * logp_t
    m = labelled.to(focal.dtype)
    if weight is not None:
        m = m * weight.to(device=focal.device, dtype=focal.dtype)[safe_target]
    # the clamp keeps an all-unlabelled batch at 0/1 = 0 with a graph, instead of 0/0 = NaN
    return (focal * m).sum() / m.sum().clamp_min(torch.finfo(focal.dtype).tiny)


class PartialFocalCE(nn.Module):
    """Module form of :func:`partial_focal_ce`; class weights are a buffer so they follow ``.to(device)``."""

    def __init__(self, gamma: float = 2.0, ignore_index: int = 255, weight=None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = int(ignore_index)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_focal_ce(logits, target, self.gamma, self.ignore_index, self.weight)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}"
