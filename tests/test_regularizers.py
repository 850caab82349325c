"""Losses on unlabelled pixels: the gated CRF loss against its definition (a float64 double loop)."""

import math

import pytest
import torch

from pointseg.config import SemiConfig
from pointseg.unlabelled.crf import GatedCRF, gated_crf_loss


def reference_gated_crf(probs, image, radius, sigma_xy, sigma_rgb, gate=None) -> float:
    """A direct double loop in float64 (no pooling): the definition, for tests."""
    n, c, h, w = probs.shape
    p = probs.double()
    img = image.double()
    g = torch.ones(n, h, w, dtype=torch.float64) if gate is None else gate.double()
    total = 0.0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                if not g[b, y, x]:
                    continue
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        yy, xx = y + dy, x + dx
                        if (dy, dx) == (0, 0) or not (0 <= yy < h and 0 <= xx < w) or not g[b, yy, xx]:
                            continue
                        kxy = math.exp(-(dy * dy + dx * dx) / (2 * sigma_xy**2))
                        krgb = math.exp(-float(((img[b, :, y, x] - img[b, :, yy, xx]) ** 2).sum()) / (2 * sigma_rgb**2))
                        total += kxy * krgb * (1 - float((p[b, :, y, x] * p[b, :, yy, xx]).sum()))
    return total / float(g.sum())



@pytest.mark.parametrize("radius,sigma_rgb", [(1, 0.1), (2, 0.5)])
def test_gated_crf_matches_its_definition(radius, sigma_rgb):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 7, 6, generator=g).softmax(1)
    image = torch.rand(2, 3, 7, 6, generator=g)
    gate = torch.rand(2, 7, 6, generator=g) > 0.2
    for m in (None, gate):
        ours = gated_crf_loss(probs, image, radius, sigma_xy=2.0, sigma_rgb=sigma_rgb, downsample=1, gate=m)
        assert ours.item() == pytest.approx(reference_gated_crf(probs, image, radius, 2.0, sigma_rgb, m), rel=1e-5)


def test_gated_crf_is_zero_for_one_class_everywhere_and_pulls_alike_neighbours_together():
    image = torch.zeros(1, 3, 8, 8)
    image[:, :, :, 4:] = 1.0  # two flat regions with an edge
    same = torch.zeros(1, 2, 8, 8)
    same[:, 0] = 1
    assert gated_crf_loss(same, image, 2, 3.0, 0.1, 1).item() == pytest.approx(0.0, abs=1e-12)
    split_at_edge = same.clone()
    split_at_edge[:, :, :, 4:] = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    split_inside = same.clone()
    split_inside[:, :, :, 2:] = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    # a class boundary on the image edge costs (almost) nothing; one inside a flat region costs a lot
    assert gated_crf_loss(split_at_edge, image, 2, 3.0, 0.1, 1) < 1e-6
    assert gated_crf_loss(split_inside, image, 2, 3.0, 0.1, 1) > 0.1


def test_gated_crf_gradient_flows_and_its_loss_is_unweighted():
    from pointseg.unlabelled import scale

    logits = torch.randn(2, 5, 16, 16, requires_grad=True)
    image = torch.rand(2, 3, 16, 16)
    cfg = SemiConfig(weight=0.5, method="gated_crf", rampup_epochs=0)
    loss = GatedCRF(cfg).loss(logits, image, torch.full((2, 16, 16), 255))
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    full = gated_crf_loss(logits.detach().softmax(1), image, 3, 6.0, 0.1, 2)
    assert loss.item() == pytest.approx(full.item(), rel=1e-6)  # the trainer applies the weight, once
    assert scale(cfg, 0.0) == 0.5
    with pytest.raises(ValueError, match="must match"):
        gated_crf_loss(logits.softmax(1), image[:, :, :8])


def test_trainer_runs_the_gated_crf_method_by_config_alone(tiny_config):
    from pointseg.train import fit

    res = fit(tiny_config(extra=["name=crf", "semi.weight=1.0", "semi.method=gated_crf", "semi.rampup_epochs=0"]),
              progress=False)
    assert all(r["train/loss"] > r["train/sup_loss"] for r in res.history)
    assert math.isfinite(res.final["test/miou"])
