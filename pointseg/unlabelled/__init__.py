"""The unlabelled-pixel methods (``semi.method``): one declared interface, one registry, and the weight × ramp-up
applied once, by the trainer (:func:`scale`), never inside a method.

The methods: ``crf.py`` (the gated CRF loss), ``semi.py`` (FixMatch and mean-teacher pseudo-labels),
``consistency.py`` (UniMatch-style consistency); their interface is ``base.py``. A new method: a module here with
a class that has the :class:`UnlabelledMethod` members (subclass :class:`NoView` for the defaults of a method that
does not move pixels), an entry in :data:`METHODS`, its settings in ``SemiConfig`` with their ranges in
``pointseg/inputs.py``. Nothing else in the trainer changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn

from ..config import SemiConfig
from .base import NoView, UnlabelledMethod
from .consistency import ConsistencyTeacher
from .crf import GatedCRF
from .semi import Teacher

__all__ = ["METHODS", "NoView", "UnlabelledMethod", "build", "rampup", "scale"]


def rampup(progress_epochs: float, rampup_epochs: float) -> float:
    """exp(-5 (1 - t)^2), t = progress / rampup clipped to [0, 1]: the usual mean-teacher ramp."""
    if rampup_epochs <= 0:
        return 1.0
    t = min(1.0, max(0.0, progress_epochs / rampup_epochs))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def scale(cfg: SemiConfig, progress_epochs: float) -> float:
    """The factor of a method's loss at this point of training: its weight times the ramp-up."""
    return cfg.weight * rampup(progress_epochs, cfg.rampup_epochs)


METHODS: dict[str, Callable[[nn.Module, SemiConfig], UnlabelledMethod]] = {
    "gated_crf": lambda model, cfg: GatedCRF(cfg), "fixmatch": Teacher, "mean_teacher": Teacher,
    "consistency": ConsistencyTeacher}


def build(cfg: SemiConfig, model: nn.Module) -> UnlabelledMethod | None:
    """The configured method for ``model`` (the student), or None when ``semi.weight`` is 0 (off)."""
    if cfg.weight <= 0:
        return None
    return METHODS[cfg.method](model, cfg)
