"""``semi.method: consistency`` — a teacher–student consistency method built for segmentation, in one student pass.

What the older ``fixmatch`` / ``mean_teacher`` teachers (semi.py) lacked, after UniMatch (Yang et al.,
CVPR 2023) and FreeMatch (Wang et al., ICLR 2023):

* **EMA teacher** (``semi.ema``, with the mean teacher's warm-up): it sees the clean crop, never the student's view.
* **Strong views that move pixels**: a random rot90/flip of the whole batch (``semi.geometric``) and CutMix
  (``semi.cutmix_prob``): a box of each crop is replaced by the same box of another crop of the batch. Images,
  clicks, pseudo-labels and (for the logged diagnostics) dense masks all go through the same transform, so every
  label stays on its pixel. The student runs once, on the mixed view: its clicks train it with pfCE as usual and
  the teacher's confident pixels with cross-entropy, so the method costs one extra forward pass (the teacher's),
  not a second student pass.
* **Self-adaptive class-wise thresholds** (``semi.threshold_mode: adaptive``, FreeMatch's SAT): a global
  threshold τ = EMA of the teacher's mean confidence on unlabelled pixels, scaled per class by the EMA of that
  class's mean probability over its maximum (τ_c = τ · p̃_c / max p̃). Classes the teacher rarely predicts get
  a lower bar, so a frequent class does not take all pseudo-labels. ``fixed`` uses ``semi.threshold``.

The pseudo-label loss is CE summed over the confident unlabelled pixels and divided by the number of unlabelled
pixels (UniMatch's normalisation): few confident pixels give a small loss, not a loud one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.raster import IGNORE_INDEX
from .semi import Teacher


class BatchView:
    """One draw of the student's view: a D4 move of the batch and a CutMix box per crop, applied alike to images
    (N×C×H×W) and per-pixel maps (N×H×W)."""

    def __init__(self, n: int, h: int, w: int, gen: torch.Generator, geometric: bool, cutmix_prob: float):
        self.k = int(torch.randint(0, 8, (1,), generator=gen)) if geometric and h == w else 0
        self.perm = torch.roll(torch.arange(n), 1) if n > 1 else None
        self.boxes: list[tuple[int, int, int, int] | None] = []
        for _ in range(n):
            u = torch.rand(3, generator=gen)
            if self.perm is None or float(torch.rand(1, generator=gen)) >= cutmix_prob:
                self.boxes.append(None)
                continue
            side = (0.1 + 0.4 * float(u[0])) ** 0.5  # box area 10–50 % of the crop
            bh, bw = max(1, int(h * side)), max(1, int(w * side))
            y0, x0 = int(float(u[1]) * (h - bh + 1)), int(float(u[2]) * (w - bw + 1))
            self.boxes.append((y0, y0 + bh, x0, x0 + bw))

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.perm is not None and any(self.boxes):
            src = t[self.perm]
            t = t.clone()
            for i, b in enumerate(self.boxes):
                if b is not None:
                    t[i, ..., b[0]:b[1], b[2]:b[3]] = src[i, ..., b[0]:b[1], b[2]:b[3]]
        if self.k % 4:
            t = torch.rot90(t, self.k % 4, dims=(-2, -1))
        if self.k >= 4:
            t = torch.flip(t, dims=(-1,))
        return t.contiguous()


class ConsistencyTeacher(Teacher):
    """EMA teacher + geometric/CutMix view + adaptive class-wise thresholds (see the module's docstring)."""

    strong_view = True  # the trainer adds its photometric jitter (semi.strong_jitter) on top of the moved pixels

    def __init__(self, student, cfg):
        super().__init__(student, cfg)  # semi.* ranges: checked before the run writes anything (inputs.py)
        self.view: BatchView | None = None
        self.tau: torch.Tensor | None = None  # global confidence EMA (adaptive mode)
        self.p_class: torch.Tensor | None = None  # per-class mean probability EMA (adaptive mode)

    def decay(self, step: int) -> float:
        return min(self.cfg.ema, 1.0 - 1.0 / (step + 2))  # always an EMA, with the mean teacher's warm-up

    def prepare(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's view of the batch and its clicks; the draw is kept for :meth:`loss` and the diagnostics."""
        n, _, h, w = x.shape
        self.view = BatchView(n, h, w, gen, self.cfg.geometric, self.cfg.cutmix_prob)
        return self.view(x), self.view(y)

    def to_student(self, t: torch.Tensor) -> torch.Tensor:
        return self.view(t) if self.view is not None else t

    @torch.no_grad()
    def thresholds(self, probs: torch.Tensor) -> torch.Tensor:
        """Per-class thresholds for this step (C,), updating the adaptive statistics from this batch's pixels
        (all of them: clicks are a negligible share of a crop)."""
        c = probs.shape[1]
        if self.cfg.threshold_mode == "fixed":
            return torch.full((c,), self.cfg.threshold, device=probs.device)
        if self.tau is None:
            self.tau = torch.tensor(1.0 / c, device=probs.device)
            self.p_class = torch.full((c,), 1.0 / c, device=probs.device)
        m = self.cfg.sat_momentum
        self.tau = m * self.tau + (1 - m) * probs.max(1).values.mean()
        self.p_class = m * self.p_class + (1 - m) * probs.mean((0, 2, 3))
        return self.tau * self.p_class / self.p_class.max()

    def loss(self, student_logits: torch.Tensor, weak: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``weak``: the clean batch (the teacher's view); ``target``: the clicks in the student's view."""
        probs = self.predict(weak)
        conf, pseudo = probs.max(1)
        thr = self.thresholds(probs)
        conf, pseudo = self.to_student(conf), self.to_student(pseudo)
        unlabelled = target == IGNORE_INDEX
        use = (conf >= thr[pseudo]) & unlabelled
        pseudo = self.keep(pseudo, use)  # in the student's view, like the diagnostics' dense masks
        if not use.any():
            return student_logits.sum() * 0.0
        ce = F.cross_entropy(student_logits.float(), pseudo, ignore_index=IGNORE_INDEX, reduction="sum")
        return ce / unlabelled.sum()  # unweighted: the trainer applies weight × ramp-up

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "tau": self.tau, "p_class": self.p_class}

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["model"])
        self.tau, self.p_class = sd.get("tau"), sd.get("p_class")
