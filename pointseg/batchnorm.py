"""Training-mode BatchNorm for channels_last tensors with few channels, by plain reductions.

On this project's CPUs, ATen's channels_last BatchNorm backward costs several times its forward when a layer has
few channels at a high resolution: the U-Net decoder's last blocks (16 and 8 channels at 64² and 128² for a 128 px
crop) and the encoder's first level. Viewed as a (pixels × channels) matrix, the same statistics and gradients are
a few vectorised column sums and multiply-adds; `make bench` times a train step with and without this (its row
"BatchNorm ≤ 16 channels by reductions"). The results equal ATen's up to float rounding (tests/test_batchnorm.py
checks both against each other in float64); eval mode, other memory formats and cumulative averages
(momentum=None) keep ATen's kernel.
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn

MAX_CHANNELS = 16  # above this ATen's kernel was as fast or faster (bench of 2026-12-03: 32 and 96 channels)


class _BatchNormTrain(torch.autograd.Function):
    """Batch statistics over N, H, W of an N×C×H×W channels_last tensor; updates the running buffers in place."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        c = x.shape[1]
        x2 = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view: channels_last memory is (N·H·W) × C, row-major
        n = x2.shape[0]
        mean = x2.sum(0) / n
        xc = x2 - mean
        var = (xc * xc).sum(0) / n  # two passes: no cancellation (torch.var_mean over dim 0 was 10× slower)
        invstd = torch.rsqrt(var + eps)
        with torch.no_grad():  # as ATen: the unbiased variance goes into the running estimate
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (n / max(n - 1, 1)), momentum)
        scale = invstd * weight
        y = torch.empty_like(x, memory_format=torch.channels_last)  # not a view: later in-place ReLUs may write it
        torch.addcmul(bias, xc, scale, out=y.permute(0, 2, 3, 1).view(-1, c))
        ctx.save_for_backward(xc, invstd, scale)
        return y

    @staticmethod
    def backward(ctx, dy):
        xc, invstd, scale = ctx.saved_tensors
        nb, c, h, w = dy.shape
        dy2 = dy.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, c)
        n = xc.shape[0]
        dbias = dy2.sum(0)
        dweight = (dy2 * xc).sum(0) * invstd  # Σ dy · x̂
        # dx = scale · (dy − Σdy / n − x̂ · Σ(dy·x̂) / n), with x̂ = xc · invstd
        dx2 = torch.addcmul(-(scale * dbias / n), dy2, scale)
        dx2.addcmul_(xc, scale * invstd * dweight / n, value=-1)
        return dx2.view(nb, h, w, c).permute(0, 3, 1, 2), dweight, dbias, None, None, None, None


def _forward(self: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    if not (self.training and self.track_running_stats and self.momentum is not None and self.affine
            and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and x.dtype in (torch.float32, torch.float64)):
        return type(self).forward(self, x)
    self.num_batches_tracked.add_(1)
    y = _BatchNormTrain.apply(x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps)
    # timm's BatchNormAct2d is a BatchNorm2d with its activation inside
    return self.act(self.drop(y)) if hasattr(self, "act") and hasattr(self, "drop") else y


def use_reduction_batchnorm(model: nn.Module, max_channels: int = MAX_CHANNELS) -> int:
    """Route the training-mode forward of every BatchNorm2d with ≤ ``max_channels`` channels through
    :class:`_BatchNormTrain` (parameters, buffers and state_dict unchanged); returns how many layers."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.num_features <= max_channels:
            m.forward = types.MethodType(_forward, m)
            n += 1
    return n
