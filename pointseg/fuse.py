"""Batch norm folded into the convolution before it, for whole-scene prediction.

In eval mode a batch norm is a per-channel scale and shift: folded into the weights and bias of the convolution
that feeds it, it costs nothing, where it otherwise reads and writes every activation once more (a fifth of the
network's time on CPU, measured with cProfile on a 16 Mpx predict). Which convolution feeds which norm is read from
one forward pass, not from the architecture's source, and the folded model must give the same output as the
original on that pass, or the original is kept.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger("pointseg.fuse")


def _pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, batch norm) names for every norm whose input is the output of a convolution."""
    names = {m: n for n, m in model.named_modules()}
    outputs: dict[int, tuple[torch.Tensor, str]] = {}  # the tensors are kept, so no id is reused meanwhile
    pairs = []

    def on_conv(m, inputs, out):
        outputs[id(out)] = (out, names[m])

    def on_norm(m, inputs, out):
        hit = outputs.get(id(inputs[0]))
        if hit is not None and hit[0] is inputs[0]:
            pairs.append((hit[1], names[m]))
    hooks = [m.register_forward_hook(on_conv if isinstance(m, nn.Conv2d) else on_norm) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return pairs


def _after_norm(norm: nn.BatchNorm2d) -> nn.Module | None:
    """What must still run where the norm was: nothing for a plain BatchNorm2d, the dropout and activation of
    timm's BatchNormAct2d; None for a norm of another kind (left as it is)."""
    if type(norm) is nn.BatchNorm2d:
        return nn.Identity()
    if type(norm).__name__ == "BatchNormAct2d" and hasattr(norm, "act") and hasattr(norm, "drop"):
        return nn.Sequential(norm.drop, norm.act)
    return None


def fold_batchnorm(model: nn.Module, example: torch.Tensor, atol: float = 1e-4) -> nn.Module:
    """A copy of the eval-mode ``model`` with each batch norm folded into its convolution; ``model`` itself when
    nothing folds or the folded copy's output on ``example`` differs from the original's by more than ``atol``."""
    model.eval()
    pairs = _pairs(model, example)
    if not pairs:
        return model
    fused = copy.deepcopy(model)
    for conv_name, norm_name in pairs:
        conv, norm = fused.get_submodule(conv_name), fused.get_submodule(norm_name)
        rest = _after_norm(norm)
        if rest is None or norm.running_mean is None:
            continue
        conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var,
                                                      norm.eps, norm.weight, norm.bias)
        parent, _, attr = norm_name.rpartition(".")
        setattr(fused.get_submodule(parent) if parent else fused, attr, rest)
    with torch.inference_mode():
        want, got = model(example), fused.eval()(example)
    if not torch.allclose(want, got, atol=atol, rtol=1e-4):
        log.warning("batch norm not folded: the folded model differs by %.2g", (want - got).abs().max().item())
        return model
    return fused


def for_prediction(models: list[nn.Module], in_channels: int, device) -> list[nn.Module]:
    """Each model as whole-scene prediction runs it: batch norm folded, channels_last (as its inputs are)."""
    example = torch.rand(1, in_channels, 64, 64, device=device).to(memory_format=torch.channels_last)
    return [fold_batchnorm(m, example).to(memory_format=torch.channels_last) for m in models]
