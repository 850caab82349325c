"""What every unlabelled-pixel method is to the trainer: the :class:`UnlabelledMethod` interface, and
:class:`NoView`, the defaults of a method that moves no pixel and keeps no state."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn as nn


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
