"""A study description (YAML) → checked search space, sampler, pruner, storage. Knows nothing of tensors."""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from pointseg.config import ConfigError, load_config

from .studyfile import StudyFile, search_files


class SweepError(ValueError):
    """A study that cannot run; raised before any training starts."""


class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random draws are seeded by (study seed, trial number) rather than once per process.

    Workers each build their sampler from the same study seed; seeded once, they would all draw the same "random"
    parameters and collide on one run directory. Seeding each trial by its number (unique in the storage) keeps the
    draws distinct across workers and a one-worker study reproducible. (Reaches into TPESampler's two generators.)
    """

    def __init__(self, seed: int, **kwargs) -> None:
        super().__init__(seed=seed, **kwargs)
        self._study_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        s = (self._study_seed * 1_000_003 + trial.number) % 2**32
        self._rng.rng.seed(s)
        self._random_sampler._rng.rng.seed(s)
        super().before_trial(study, trial)


@dataclass
class Study:
    name: str
    base_config: str | None
    space: dict[str, dict[str, Any]]
    overrides: list[str] = field(default_factory=list)
    sampler: str = "grid"  # grid (factor study: every cell once) | tpe (tuning)
    seed: int = 0
    # TPE samples at random until this many trials finished (Optuna's default is 10, which would leave a 12-trial
    # study 10 random trials); multivariate TPE models the parameters jointly, as a joint study asks
    startup_trials: int = 10
    objective: str = "val_points/miou"  # the points arm selects on val clicks, never on dense masks
    direction: str = "maximize"
    seeds_per_config: int = 1
    trials: int | None = None  # budget; a grid defaults to its size
    pruner: str = "none"  # none | median | successive_halving (grids never prune: every cell must finish)
    # the median pruner acts from this epoch on (epochs count from 1). 1, the first sweeps' setting, let it stop
    # trials after one epoch, which ranked joint-tpe's complete trials no better than chance (report: joint-tpe)
    prune_from_epoch: int = 1
    storage: str | None = None
    heartbeat_interval: int = 30
    grace_period: int = 120
    # a trial whose worker died is retried this many times (its run resumes where it stopped): a long study on a
    # machine stopped every few hours is interrupted more than once (with 1, the second stop lost the trial),
    # while a trial that kills its worker every time (out of memory) still ends after a few tries
    max_retry: int = 5
    out_dir: str = "runs/sweeps"
    export_dir: str = "results/sweeps"  # the committed record, <export_dir>/<name>.json (sweeps/record.py)
    question: str | None = None  # a study for the report says what it asks and expects before it runs
    hypothesis: str | None = None
    verdict: str | None = None  # written after the runs
    path: str | None = None  # the file it was loaded from (not a key of that file)

    @classmethod
    def load(cls, path: str | Path, **overrides) -> "Study":
        """The search of a study file (its ``search:`` block; name, base, overrides and texts from the study)."""

        p = Path(path)
        if not p.exists():
            known = [x.name for x in search_files()]
            raise SweepError(f"study file {p} not found; searches in experiments/studies/: {known}")
        try:
            sf = StudyFile.load(p)
        except ConfigError as e:
            raise SweepError(str(e)) from None
        if sf.search is None:
            raise SweepError(f"{p}: no search: block; a study of cells runs with `python -m sweeps {p}`")
        raw = {"name": sf.name, "base_config": sf.base, "overrides": list(sf.overrides), "question": sf.question,
               "hypothesis": sf.hypothesis, "verdict": sf.raw.get("verdict"), **sf.search}
        raw.update({k: v for k, v in overrides.items() if v is not None})
        study = cls(**raw, path=str(p))
        study.validate(p)
        return study

    # ---- checks, all before any training -------------------------------------------------------------
    def validate(self, where: Path | str = "study") -> None:
        if not self.space:
            raise SweepError(f"{where}: the search space is empty; name at least one config key under `space:`")
        if self.sampler not in ("grid", "tpe"):
            raise SweepError(f"{where}: sampler must be grid or tpe, got {self.sampler!r}")
        if self.startup_trials < 1:
            raise SweepError(f"{where}: startup_trials must be at least 1, got {self.startup_trials}")
        if self.pruner not in ("none", "median", "successive_halving"):
            raise SweepError(f"{where}: pruner must be none, median or successive_halving, got {self.pruner!r}")
        if self.prune_from_epoch < 1:
            raise SweepError(f"{where}: prune_from_epoch counts epochs from 1, got {self.prune_from_epoch}")
        if self.sampler == "grid" and self.pruner != "none":
            raise SweepError(f"{where}: a grid factor study must not prune (every cell has to finish)")
        for key, spec in self.space.items():
            kind = spec.get("type", "categorical")
            if kind not in ("categorical", "float", "int"):
                raise SweepError(f"{where}: space.{key}: type must be categorical, float or int")
            if self.sampler == "grid" and kind != "categorical":
                raise SweepError(f"{where}: space.{key}: a grid needs `choices`, not a range")
            if kind == "categorical" and not spec.get("choices"):
                raise SweepError(f"{where}: space.{key}: categorical needs a non-empty `choices` list")
            samples = spec["choices"] if kind == "categorical" else [spec["low"], spec["high"]]
            for v in samples:  # every value must make a valid trainer config
                try:
                    self.config_for({key: v}, seed=0)
                except ConfigError as e:
                    raise SweepError(f"{where}: space.{key}={v!r} is not a valid trainer setting: {e}") from None
        try:
            base = self.config_for({}, seed=0)
        except ConfigError as e:
            raise SweepError(f"{where}: base config / overrides: {e}") from None
        if base.points.supervision == "points" and self.objective.startswith(("val/", "test/")):
            raise SweepError(f"{where}: objective {self.objective!r} reads dense masks, which the points arm never "
                             "sees (not even to select); use objective: val_points/miou (clicks on the val tile)")
        if ("points.n_per_class" in self.space and self.objective.startswith("val_points/")
                and base.eval.val_points_per_class is None):
            raise SweepError(f"{where}: the space varies points.n_per_class, so with val clicks drawn at each trial's "
                             "own budget the objective would score a 1-click trial on 1 val click per class and a "
                             "20-click one on 20, two different metrics; fix the val clicks for every trial with "
                             "`eval.val_points_per_class=20` (or another number) under `overrides:`")

    def config_for(self, params: dict[str, Any], seed: int, extra: list[str] = ()):
        flow = {k: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
                for k, v in params.items()}
        ov = list(self.overrides) + [f"{k}={v}" for k, v in flow.items()]
        return load_config(self.base_config, ov + [f"seed={seed}", *extra])

    # ---- optuna pieces -------------------------------------------------------------------------------
    def grid(self) -> list[dict[str, Any]]:
        keys = list(self.space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.space[k]["choices"] for k in keys))]

    @property
    def budget(self) -> int:
        if self.sampler == "grid":
            return len(self.grid())
        if not self.trials:
            raise SweepError(f"study {self.name}: a tpe study needs a trial budget (`trials:` or TRIALS=…)")
        return int(self.trials)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        out = {}
        for key, spec in self.space.items():
            kind = spec.get("type", "categorical")
            if kind == "categorical":
                out[key] = trial.suggest_categorical(key, spec["choices"])
            elif kind == "float":
                out[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False))
            else:
                out[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec.get("log", False))
        return out

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        # grid cells are enqueued as fixed trials, so the sampler only ever fills a tpe study
        with warnings.catch_warnings():  # multivariate TPE is "experimental" since Optuna 2.2; used knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return TrialSeededTPE(seed=self.seed, n_startup_trials=self.startup_trials, multivariate=True)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "median":
            # Optuna prunes at a step ≥ n_warmup_steps; the trainer reports epochs 1, 2, …
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=self.prune_from_epoch)
        if self.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner()
        return optuna.pruners.NopPruner()

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(self.out_dir) / (self.name + '.db')}"

    def fingerprint(self) -> dict[str, Any]:
        """What makes two studies of one name the same study."""
        return {"space": self.space, "base_config": self.base_config, "overrides": list(self.overrides),
                "objective": self.objective, "sampler": self.sampler, "seeds_per_config": self.seeds_per_config}
