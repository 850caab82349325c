"""Losses on the unlabelled pixels that use the image's own structure around the clicks.

Gated CRF loss (Obukhov et al., "Gated CRF Loss for Weakly Supervised Semantic Image Segmentation", 2019):

    L = Σ_i Σ_{j ∈ Ω(i), j ≠ i} m_i m_j K_ij (1 − ⟨s_i, s_j⟩)  /  Σ_i m_i

s = softmax probabilities, Ω(i) the (2r+1)² window around pixel i, m a gate (1 on valid pixels, 0 on padding),
K_ij = exp(−|x_i − x_j|² / 2σ_xy² − |I_i − I_j|² / 2σ_rgb²) a bilateral affinity. Neighbours that look alike are
pushed to the same class (Potts), so a click's label spreads inside its region and stops at image edges. It is
computed at 1/``downsample`` resolution (probabilities and image average-pooled), as in the paper, which keeps the
unfolded window tensor small on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import NoView


def gated_crf_loss(probs: torch.Tensor, image: torch.Tensor, radius: int = 3, sigma_xy: float = 6.0,
                   sigma_rgb: float = 0.1, downsample: int = 2, gate: torch.Tensor | None = None) -> torch.Tensor:
    """Gated CRF loss of N×C×H×W probabilities given the N×3×H×W image in [0, 1].

    ``sigma_xy`` is in input pixels; ``gate`` (N×H×W, 1 = take part) drops pixels such as no-data. Returns a scalar
    averaged over the gated pixels (0 with a graph when none takes part).
    """
    if probs.ndim != 4 or image.ndim != 4 or probs.shape[0] != image.shape[0] or probs.shape[2:] != image.shape[2:]:
        raise ValueError(f"probs N×C×H×W and image N×3×H×W must match, got {tuple(probs.shape)} and "
                         f"{tuple(image.shape)}")
    n = probs.shape[0]
    m = torch.ones(n, 1, *probs.shape[2:], dtype=probs.dtype, device=probs.device) if gate is None \
        else gate[:, None].to(probs.dtype)
    if downsample > 1:
        probs = F.avg_pool2d(probs, downsample, ceil_mode=True)
        image = F.avg_pool2d(image.to(probs.dtype), downsample, ceil_mode=True)
        m = F.avg_pool2d(m, downsample, ceil_mode=True)
    h, w = probs.shape[2:]
    k = 2 * radius + 1
    # spatial part of K: the same for every pixel (in input pixels, hence × downsample)
    d = torch.arange(-radius, radius + 1, dtype=probs.dtype, device=probs.device) * downsample
    kxy = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma_xy**2)).reshape(1, k * k, 1)
    kxy[0, (k * k) // 2] = 0.0  # no pair of a pixel with itself
    img = image.to(probs.dtype) / sigma_rgb
    # unfold: N×(ch·k²)×(h·w); zero padding outside, removed by the gate (padded m = 0)
    img_u = F.unfold(img, k, padding=radius).view(n, img.shape[1], k * k, h * w)
    krgb = torch.exp(-0.5 * ((img_u - img.reshape(n, -1, 1, h * w)) ** 2).sum(1))  # N×k²×hw
    m_u = F.unfold(m, k, padding=radius).view(n, k * k, h * w)
    kernel = kxy * krgb * m_u * m.reshape(n, 1, h * w)
    p_u = F.unfold(probs, k, padding=radius).view(n, probs.shape[1], k * k, h * w)
    agree = (p_u * probs.reshape(n, -1, 1, h * w)).sum(1)  # ⟨s_i, s_j⟩: N×k²×hw
    total = m.sum()
    if total <= 0:
        return probs.sum() * 0.0
    return (kernel * (1.0 - agree)).sum() / total


class GatedCRF(NoView):
    """The unlabelled-pixel method ``semi.method: gated_crf``: no teacher, a regulariser on the student's output
    (an :class:`pointseg.unlabelled.UnlabelledMethod`)."""

    strong_view = False  # the student sees the usual light jitter; the affinities use the clean crop

    def __init__(self, cfg):
        self.cfg = cfg
        self.last_fraction = 1.0  # every valid pixel takes part

    def loss(self, student_logits: torch.Tensor, clean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        probs = student_logits.float().softmax(1)
        return gated_crf_loss(probs, clean, c.crf_radius, c.crf_sigma_xy, c.crf_sigma_rgb, c.crf_downsample)

