"""Label shift between the clicks and the scene: a network learns the class mix of the labels it trained on.

Class-balanced clicks give a thin class (roads: a tenth of the pixels) as many labels as the class that covers
half the scene, so a points run learns a prior near uniform and calls too many pixels road. With the training
labels' class frequencies π_s (known: they are the clicks, or the clicks and pseudo-labels) and the network's
posteriors on unlabelled pixels, the EM of Saerens, Latinne & Decaestecker (Neural Computation 14, 2002) finds
the class mix π_t that makes those posteriors most likely; the posteriors are then re-weighted by π_t / π_s
(Bayes' rule under a change of prior, the class-conditional densities unchanged). No dense mask is read.

EM needs calibrated posteriors. Focal loss flattens them, and on flat posteriors EM runs to a corner: on the
20-click Dubai models it gave Road and Building a share of 0.00 (a class clicked in most training images). So
the posteriors are first calibrated on the val tile's clicks (held out, drawn like the training clicks, so
under π_s) by bias-corrected temperature scaling, softmax(log p / T + b) fitted by NLL, as Alexandari, Kundaje &
Shrikumar (ICML 2020) recommend before EM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

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


def calibrate(probs: torch.Tensor, temperature: float, bias: np.ndarray) -> torch.Tensor:
    """softmax(log p / T + b) over the class axis (the first)."""
    b = torch.as_tensor(bias, dtype=probs.dtype).view(-1, *([1] * (probs.ndim - 1)))
    return (probs.clamp_min(1e-8).log() / temperature + b).softmax(0)


def fit_calibration(probs: torch.Tensor, labels: torch.Tensor, iters: int = 100) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: T and b minimising the NLL of softmax(log p / T + b) on labelled
    pixels (N×C posteriors, N labels); a class without a label keeps b = 0."""
    z = probs.double().clamp_min(1e-8).log()
    y = labels.long()
    present = torch.zeros(z.shape[1], dtype=torch.bool)
    present[y.unique()] = True
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t, b], lr=0.5, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp() + b * present, y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp()), (b * present).detach().numpy()


@dataclass
class PriorShift:
    """A fitted label-shift correction: calibrate, then re-weight by π_t / π_s."""

    temperature: float
    bias: np.ndarray
    source: np.ndarray
    target: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        return prior_weights(self.source, self.target)

    def apply(self, probs: torch.Tensor) -> torch.Tensor:
        """C×h×w posteriors as the model gives them → under the target class mix."""
        return reweight(calibrate(probs, self.temperature, self.bias), self.weights)

    def shifted_to(self, scenes, probs) -> "PriorShift":
        """This calibration, re-weighted to the class mix EM finds in ``scenes`` (``probs``: their posteriors as
        the model gives them, C×h×w each)."""
        samples = [sample_pixels(calibrate(p, self.temperature, self.bias), s.valid) for s, p in zip(scenes, probs)]
        return replace(self, target=em_prior(torch.cat(samples), self.source))

    def record(self, names: Sequence[str], target_key: str = "prior/target") -> dict[str, float]:
        out = {"prior/temperature": float(self.temperature)}
        for key, values in (("prior/bias", self.bias), ("prior/source", self.source), (target_key, self.target)):
            out.update({f"{key}/{n}": float(v) for n, v in zip(names, values)})
        return out


def click_probs(models, scenes, point_maps, device="cpu", **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """The models' posteriors (N×C) at the clicked pixels of ``point_maps``, and the clicks' classes."""
    from .infer import predict_probs

    ps, ys = [], []
    for s, m in zip(scenes, point_maps):
        keep = torch.from_numpy(np.asarray(m) != IGNORE_INDEX)
        if keep.any():
            p = predict_probs(models, s.image, device=device, **kw)
            ps.append(p[:, keep].T)
            ys.append(torch.from_numpy(np.asarray(m)[keep.numpy()].astype(np.int64)))
    if not ps:
        raise ValueError("no click on the val images to calibrate on")
    return torch.cat(ps), torch.cat(ys)


def calibrated(models, cfg, ckpt: dict, val_scenes, device="cpu", **kw) -> PriorShift:
    """The correction's fixed half, fitted once per model: the class mix of the run's training labels and the
    calibration on the val tile's clicks (``cfg``'s own, drawn as in training). Its target is still the source;
    :meth:`PriorShift.shifted_to` fits the class mix of some scenes."""
    from .points import val_point_maps

    source = run_label_prior(cfg, ckpt)
    t, b = fit_calibration(*click_probs(models, val_scenes, val_point_maps(cfg, val_scenes), device, **kw))
    return PriorShift(t, b, source, source)


def run_label_prior(cfg, ckpt: dict) -> np.ndarray:
    """The class mix of the labels a run trained on, as its checkpoint stores it."""
    if ckpt.get("label_prior") is None:
        from .config import ConfigError

        raise ConfigError(f"run {cfg.name} seed {cfg.seed}: its checkpoint holds no label_prior (it was trained before "
                          "checkpoints stored the class mix of their labels); train it again to correct its prior")
    return np.asarray(ckpt["label_prior"], np.float64)
