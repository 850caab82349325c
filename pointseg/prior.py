"""Label shift between the clicks and the scene: a network learns the class mix of the labels it trained on.

Class-balanced clicks give a thin class (roads: a tenth of the pixels) as many labels as the class that covers
half the scene, so a points run learns a prior near uniform and calls too many pixels road. With the training
labels' class frequencies π_s (known: they are the clicks, or the clicks and pseudo-labels) and the network's
posteriors on unlabelled pixels, the EM of Saerens, Latinne & Decaestecker (Neural Computation 14, 2002) finds
the class mix π_t that makes those posteriors most likely; the posteriors are then re-weighted by π_t / π_s
(Bayes' rule under a change of prior, the class-conditional densities unchanged). No dense mask is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data.raster import IGNORE_INDEX


def label_prior(label_maps: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Class frequencies of the labelled pixels of ``label_maps`` (the labels a run trained on)."""
    counts = np.zeros(num_classes, np.float64)
    for m in label_maps:
        lab = np.asarray(m)
        lab = lab[lab != IGNORE_INDEX].astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
            raise ValueError(f"label_prior: a label outside 0..{num_classes - 1} ({lab.min()}..{lab.max()})")
        counts += np.bincount(lab, minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise ValueError("label_prior: no labelled pixel in the label maps")
    return counts / counts.sum()


def em_prior(probs: np.ndarray | torch.Tensor, source: np.ndarray, iters: int = 200, tol: float = 1e-6) -> np.ndarray:
    """The class mix of the pixels behind ``probs`` (N×C posteriors of a model trained under the prior
    ``source``): Saerens et al.'s EM, from π = source; a class with no source label keeps its posterior as is."""
    p = torch.as_tensor(probs, dtype=torch.float64)
    src = torch.as_tensor(source, dtype=torch.float64)
    if p.ndim != 2 or p.shape[1] != src.numel():
        raise ValueError(f"em_prior: probs must be N×{src.numel()}, got {tuple(p.shape)}")
    seen = src > 0
    pi = src.clone()
    for _ in range(iters):
        w = torch.where(seen, pi / src.clamp_min(1e-12), torch.ones_like(pi))
        q = p * w
        q = q / q.sum(1, keepdim=True).clamp_min(1e-300)
        new = torch.where(seen, q.mean(0), src)
        new = new / new.sum()
        done = (new - pi).abs().max().item() < tol
        pi = new
        if done:
            break
    return pi.numpy()


def prior_weights(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """π_t / π_s per class (1 where the source has no label of a class: nothing to correct)."""
    s, t = np.asarray(source, np.float64), np.asarray(target, np.float64)
    return np.where(s > 0, t / np.where(s > 0, s, 1.0), 1.0).astype(np.float32)


def reweight(probs: torch.Tensor, weights: np.ndarray | None) -> torch.Tensor:
    """C×h×w posteriors under the source prior → under the target prior (renormalised over classes)."""
    if weights is None:
        return probs
    w = torch.as_tensor(weights, dtype=probs.dtype).view(-1, *([1] * (probs.ndim - 1)))
    q = probs * w
    return q / q.sum(0, keepdim=True).clamp_min(1e-12)


def sample_pixels(probs: torch.Tensor, valid: np.ndarray | None = None, stride: int = 4) -> torch.Tensor:
    """Every ``stride``-th pixel's posterior (N×C) of a C×h×w map, no-data pixels left out: EM needs a sample of
    the scene, not every pixel."""
    p = probs[:, ::stride, ::stride]
    flat = p.reshape(p.shape[0], -1).T
    if valid is not None:
        keep = torch.from_numpy(np.ascontiguousarray(np.asarray(valid)[::stride, ::stride]).reshape(-1))
        flat = flat[keep]
    return flat


def scene_prior(models, scenes, source: np.ndarray, window: int = 512, overlap: float = 0.25, batch_size: int = 4,
                device="cpu", images: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """EM's class mix of ``scenes`` (their pixels, sampled; ``images``: the scenes' images as the models see
    them, when restyled) for models trained under ``source``."""
    from .infer import predict_probs

    images = images if images is not None else [s.image for s in scenes]
    samples = [sample_pixels(predict_probs(models, im, window, overlap, batch_size, device=device), s.valid)
               for s, im in zip(scenes, images)]
    return em_prior(torch.cat(samples), source)


def run_label_prior(cfg, ckpt: dict) -> np.ndarray:
    """The class mix of the labels a run trained on: stored in its checkpoint, or (older checkpoints) rebuilt
    from its config, its clicks drawn again and, for a self-trained run, its teacher's pseudo-labels made again
    (that teacher's weights must be here)."""
    if ckpt.get("label_prior") is not None:
        return np.asarray(ckpt["label_prior"], np.float64)
    from .inputs import RunInputs

    inputs = RunInputs.read(cfg)
    return label_prior(inputs.loss_targets, inputs.spec.num_classes)
