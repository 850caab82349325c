"""The unlabelled-pixel methods (``semi.method``): one declared interface, one registry, and the weight × ramp-up
applied once, by the trainer (:func:`scale`), never inside a method.

A new method: a class with the :class:`UnlabelledMethod` members (subclass :class:`NoView` for the defaults of a
method that does not move pixels), an entry in :data:`METHODS`, its settings in ``SemiConfig`` with their ranges in
``pointseg/inputs.py``. Nothing else in the trainer changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn as nn

from .config import SemiConfig


class UnlabelledMethod(Protocol):
    """What the trainer calls, in this order each step: ``prepare`` (the student's view of the batch and its clicks),
    ``loss`` (unweighted; the trainer multiplies by :func:`scale`), ``update`` (after the optimiser step)."""

    strong_view: bool  # the student sees the strong photometric jitter (semi.strong_jitter) instead of the light one
    last_fraction: float  # share of the crop's pixels the last loss used (logged)
    last_pseudo: torch.Tensor | None  # the last pseudo-labels in the student's view (diagnostics), None without

    def prepare(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def to_student(self, t: torch.Tensor) -> torch.Tensor:
        ...

    def loss(self, student_logits: torch.Tensor, clean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ...

    def update(self, student: nn.Module, step: int) -> None:
        ...

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, sd: dict) -> None:
        ...


class NoView:
    """Defaults for a method whose student sees the batch where it is (no pixel moves) and that keeps no state."""

    last_pseudo: torch.Tensor | None = None

    def prepare(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def to_student(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def update(self, student: nn.Module, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict) -> None:
        pass


def rampup(progress_epochs: float, rampup_epochs: float) -> float:
    """exp(-5 (1 - t)^2), t = progress / rampup clipped to [0, 1]: the usual mean-teacher ramp."""
    if rampup_epochs <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress_epochs / rampup_epochs))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def scale(cfg: SemiConfig, progress_epochs: float) -> float:
    """The factor of a method's loss at this point of training: its weight times the ramp-up."""
    return cfg.weight * rampup(progress_epochs, cfg.rampup_epochs)


def _gated_crf(model: nn.Module, cfg: SemiConfig) -> UnlabelledMethod:
    from .regularizers import GatedCRF

    return GatedCRF(cfg)


def _teacher(model: nn.Module, cfg: SemiConfig) -> UnlabelledMethod:
    from .semi import Teacher

    return Teacher(model, cfg)


def _consistency(model: nn.Module, cfg: SemiConfig) -> UnlabelledMethod:
    from .consistency import ConsistencyTeacher

    return ConsistencyTeacher(model, cfg)


METHODS: dict[str, Callable[[nn.Module, SemiConfig], UnlabelledMethod]] = {
    "gated_crf": _gated_crf, "fixmatch": _teacher, "mean_teacher": _teacher, "consistency": _consistency}


def build(cfg: SemiConfig, model: nn.Module) -> UnlabelledMethod | None:
    """The configured method for ``model`` (the student), or None when ``semi.weight`` is 0 (off)."""
    if cfg.weight <= 0:
        return None
    return METHODS[cfg.method](model, cfg)
