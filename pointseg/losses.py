"""Partial focal cross-entropy: the focal loss of a softmax classifier, averaged over labelled pixels only.

    pfCE = Σ_i M_i · w_{y_i} · (1 - p_{i,y_i})^γ · (-log p_{i,y_i})  /  Σ_i M_i · w_{y_i}

M_i = 1 on a labelled pixel (target ≠ ignore_index), w = class weights (1 when none). At γ = 0 this is exactly
``F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index)``. Focal loss: Lin et al., "Focal Loss
for Dense Object Detection", ICCV 2017.
"""

from __future__ import annotations

import logging
import os

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


class _DenseFocal(torch.autograd.Function):
    """Focal term over a mostly labelled batch with a hand-written backward.

    d/dz_j of -(1-p_t)^γ log p_t = g · (δ_jt - softmax_j), g = γ (1-p_t)^(γ-1) p_t log p_t - (1-p_t)^γ,
    which is log-softmax's own backward of a one-hot gradient holding g at the target class: the backward is a
    scatter and torch's fused kernel, as cross-entropy's is, instead of autograd's chain through gather, exp and
    pow on the full N×C×H×W tensor. Unlabelled pixels get log p_t = 0 (so p_t = 1 and both the focal term and g
    vanish) instead of a mask multiplied in; γ = 1 and 2 avoid pow. On 2 CPU threads each extra N×H×W
    elementwise op costs about 3 % of a cross-entropy, so the op count is what this class keeps low.
    """

    @staticmethod
    def forward(ctx, x, safe_t, unlabelled, m, denom, gamma):
        logp = F.log_softmax(x, dim=1)
        logp_t = logp.gather(1, safe_t.unsqueeze(1)).squeeze(1).masked_fill_(unlabelled, 0.0)
        p_t = logp_t.exp()
        one_m = torch.rsub(p_t, 1.0).clamp_min_(0.0)
        w = one_m * one_m if gamma == 2.0 else (one_m if gamma == 1.0 else one_m.pow(gamma))
        wl = w * logp_t if m is None else w * logp_t * m
        loss = -wl.sum() / denom
        ctx.save_for_backward(logp, safe_t, logp_t, p_t, one_m, w, m, denom)
        ctx.gamma = gamma
        return loss

    @staticmethod
    def backward(ctx, grad):
        logp, safe_t, logp_t, p_t, one_m, w, m, denom = ctx.saved_tensors
        gamma = ctx.gamma
        g = p_t * logp_t
        if gamma == 2.0:
            g.mul_(one_m).mul_(2.0)  # γ (1-p)^(γ-1) p log p
        elif gamma != 1.0:  # (1-p)^(γ-1) = w / (1-p), no second pow; at p = 1, w = 0 (γ < 1: 0 · ∞ is taken as 0)
            g.mul_(w).div_(one_m.clamp_min(1e-30)).mul_(gamma)
        g.sub_(w)
        if m is not None:
            g.mul_(m)
        g.mul_(grad / denom)
        onehot = torch.zeros_like(logp).scatter_(1, safe_t.unsqueeze(1), g.unsqueeze(1))
        return torch._log_softmax_backward_data(onehot, logp, 1, logp.dtype), None, None, None, None, None


def _hit(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """N×C×H×W: True at each pixel's target class. An ignored pixel (t = ignore_index ≥ C) hits no class."""
    return torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1) == t.unsqueeze(1)


def _fused_forward(x: torch.Tensor, t: torch.Tensor, gamma: float):
    """Σ of the focal term, the per-pixel gradient factor g (see :class:`_DenseFocal`) and the number of pixels
    whose target is a class, as one expression that inductor compiles into a couple of loops over x: the
    log-softmax, the target's log-probability (a select over C, not a gather, so ignored pixels simply hit nothing
    and carry log p_t = 0) and the dozen N×H×W elementwise steps, without the intermediate tensors."""
    logp = F.log_softmax(x, dim=1)
    hit = _hit(x, t)
    logp_t = torch.where(hit, logp, 0.0).sum(1)
    p_t = logp_t.exp()
    one_m = (1.0 - p_t).clamp_min(0.0)
    w = one_m * one_m if gamma == 2.0 else (one_m if gamma == 1.0 else one_m.pow(gamma))
    if gamma == 2.0:
        g = 2.0 * one_m * p_t * logp_t - w
    elif gamma == 1.0:
        g = p_t * logp_t - w
    else:  # γ (1-p)^(γ-1) p log p = γ w/(1-p) p log p; at p = 1 it is 0 (γ < 1: 0 · ∞ taken as 0)
        g = torch.where(one_m > 0, gamma * w / one_m.clamp_min(1e-30) * p_t * logp_t, 0.0) - w
    return -(w * logp_t).sum(), g, hit.sum()


def _fused_backward(x: torch.Tensor, t: torch.Tensor, g: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """d loss / d x = scale · g · (onehot(t) - softmax(x)), one loop that recomputes the softmax from x instead of
    writing and reading back a saved log-softmax, a zero tensor and a scatter (what cross-entropy's backward does).
    ``scale`` (the upstream gradient ÷ the labelled count, 0-d) is applied inside the loop, not as a pass of its own."""
    return (g * scale).unsqueeze(1) * (_hit(x, t).to(x.dtype) - F.softmax(x, dim=1))


class _FusedDenseFocal(torch.autograd.Function):
    """:class:`_DenseFocal` without class weights, forward and backward each compiled into one kernel."""

    @staticmethod
    def forward(ctx, x, target, n_labelled, gamma):
        total, g, n_hit = _compiled("forward")(x, target, gamma)
        if int(n_hit) != n_labelled:  # a labelled pixel whose id is no class: gather would have raised
            raise IndexError("index out of bounds: a target id is neither a class nor ignore_index")
        ctx.save_for_backward(x, target, g)
        ctx.n_labelled = n_labelled
        return total / n_labelled

    @staticmethod
    def backward(ctx, grad):
        x, target, g = ctx.saved_tensors
        scale = grad / ctx.n_labelled
        try:
            return _compiled("backward")(x, target, g, scale), None, None, None
        except Exception as e:  # noqa: BLE001 — a compiler that fails only here: the same formula, eager
            _compile_failed(e)
            return _fused_backward(x, target, g, scale), None, None, None


_COMPILED: dict[str, object] = {}
_COMPILE_MIN_PIXELS = 65536  # smaller batches (tests, tiny crops) are not worth a compile of several seconds


def _compiled(which: str):
    if which not in _COMPILED:
        fn = _fused_forward if which == "forward" else _fused_backward
        _COMPILED[which] = torch.compile(fn, dynamic=False)
    return _COMPILED[which]


def _compile_failed(e: Exception) -> None:
    if not _COMPILED.get("failed"):
        logging.getLogger("pointseg").warning(
            "torch.compile of the focal loss failed (%s); using the uncompiled form", str(e)[:200])
    _COMPILED["failed"] = True


def _use_fused(x: torch.Tensor, weight, ignore_index: int = 255, compiled: bool = True) -> bool:
    """The compiled path: asked for, CPU, no class weights, an ignore_index that is no class id, a batch big
    enough, a working compiler. A compiler that fails (none installed, an unsupported platform) is reported once;
    the hand-written path takes over."""
    if not compiled or weight is not None or x.device.type != "cpu" or x[:, 0].numel() < _COMPILE_MIN_PIXELS:
        return False
    if 0 <= ignore_index < x.shape[1]:  # the compiled select treats an ignored pixel as one that hits no class
        return False
    if os.environ.get("POINTSEG_COMPILE_LOSS", "1") == "0" or _COMPILED.get("failed"):
        return False
    return True


_DENSE_FRACTION = 0.2  # above this share of labelled pixels, the whole-tensor path is the faster one


def partial_focal_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    ignore_index: int = 255,
    weight: torch.Tensor | None = None,
    compiled: bool = False,
) -> torch.Tensor:
    """Partial focal cross-entropy over the labelled pixels.

    Args:
        logits: raw scores, N×C×H×W, any float dtype (computed in float32).
        target: N×H×W int64, a class id on labelled pixels and ``ignore_index`` elsewhere.
        gamma: focusing parameter; 0 gives plain cross-entropy.
        ignore_index: the value of unlabelled pixels.
        weight: optional per-class weights, shape C.
        compiled: with dense labels, compile forward and backward (inductor, CPU): about 2 ms a step faster at
            batch 16 × 128², but the first call compiles for 13–22 s, so it pays only beyond several thousand
            steps (README, Speed); the trainer's ``train.compile_loss``.

    Returns:
        A scalar. A batch without one labelled pixel gives 0 that still backpropagates (zero gradients).
    """
    _check(logits, target, weight)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    labelled = target != ignore_index
    n_labelled = int(labelled.sum())
    if n_labelled > _DENSE_FRACTION * labelled.numel():
        return _dense_pfce(logits, target, labelled, n_labelled, gamma, ignore_index, weight, compiled)
    return _sparse_pfce(logits, target, labelled, n_labelled, gamma, ignore_index, weight)


def _dense_pfce(logits, target, labelled, n_labelled: int, gamma: float, ignore_index: int, weight,
                compiled: bool) -> torch.Tensor:
    """pfCE when most pixels are labelled: over the whole batch, by a custom backward (or the fused one)."""
    n_classes = logits.shape[1]
    w = None if weight is None else weight.to(device=logits.device, dtype=torch.float32)
    try:  # torch's own bounds checks cost nothing extra; their error is translated below
        if gamma == 0:  # exactly cross-entropy: use torch's fused kernel
            return F.cross_entropy(logits.float(), target, weight=w, ignore_index=ignore_index)
        if _use_fused(logits, w, ignore_index, compiled):
            try:
                return _FusedDenseFocal.apply(logits.float(), target, n_labelled, float(gamma))
            except Exception as e:  # noqa: BLE001 — any compiler failure: fall back, say so once
                if "out of bounds" in str(e):
                    raise
                _compile_failed(e)
        unlabelled = ~labelled
        safe_t = target.masked_fill(unlabelled, 0)
        if w is None:
            m, denom = None, torch.tensor(float(n_labelled), device=logits.device)
        else:
            m = w[safe_t].masked_fill_(unlabelled, 0.0)
            denom = m.sum().clamp_min(torch.finfo(m.dtype).tiny)
        return _DenseFocal.apply(logits.float(), safe_t, unlabelled, m, denom, float(gamma))
    except (IndexError, RuntimeError) as e:
        if "out of bounds" not in str(e):
            raise
        raise ValueError(f"target holds class ids outside [0, {n_classes}) that are not "
                         f"ignore_index={ignore_index} ({e})") from None


def _sparse_pfce(logits, target, labelled, n_labelled: int, gamma: float, ignore_index: int,
                 weight) -> torch.Tensor:
    """pfCE on the labelled pixels only (M×C, classes on the contiguous last axis): with point labels M is a tiny
    fraction of N·H·W, so the loss costs less than a dense cross-entropy over the whole batch."""
    n, n_classes, h, w_ = logits.shape
    if n_labelled == 0:
        return logits.float().sum() * 0.0  # no labelled pixel: 0 (float32, like any other value) with a graph
    pos = labelled.reshape(-1).nonzero().squeeze(1)  # once: boolean indexing would search again in backward
    x = logits.reshape(n, n_classes, h * w_)[pos // (h * w_), :, pos % (h * w_)].float()  # M×C, float32
    t = target.reshape(-1)[pos]  # M
    if int(t.min()) < 0 or int(t.max()) >= n_classes:
        bad = t[(t < 0) | (t >= n_classes)][0].item()
        raise ValueError(f"target holds class ids outside [0, {n_classes}) (e.g. {bad}) "
                         f"that are not ignore_index={ignore_index}")
    w = None if weight is None else weight.to(device=x.device, dtype=x.dtype)[t]
    if gamma == 0:
        focal = F.cross_entropy(x, t, reduction="none")
    else:
        logp_t = F.log_softmax(x, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        # 1-p_t is floored above 0: for γ < 1 the derivative of (1-p)^γ at 1-p = 0 is ∞, and autograd's ∞ · 0
        # would give NaN where the true gradient is 0 (p_t rounds to 1 for a confidently right logit)
        focal = -((1.0 - logp_t.exp()).clamp_min(1e-30) ** gamma) * logp_t
    if w is None:
        return focal.mean()
    return (focal * w).sum() / w.sum()


class PartialFocalCE(nn.Module):
    """Module form of :func:`partial_focal_ce`; class weights are a buffer so they follow ``.to(device)``."""

    def __init__(self, gamma: float = 2.0, ignore_index: int = 255, weight=None, compiled: bool = False):
        super().__init__()
        self.compiled = bool(compiled)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = int(ignore_index)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return partial_focal_ce(logits, target, self.gamma, self.ignore_index, self.weight, self.compiled)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, ignore_index={self.ignore_index}"
