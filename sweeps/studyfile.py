"""A study file (experiments/studies/*.yaml) as data: its question, hypothesis, base config, seeds and cells,
checked against a schema that rejects unknown keys with the closest name. Reads YAML only: the report imports it
without torch or the trainer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pointseg.config import ConfigError, _suggest, load_config

# what a study file may hold: a typo (`hypothesys:`, `resue:`) is an error naming the closest key, never ignored
STUDY_KEYS = {"name", "question", "hypothesis", "base", "seeds", "cells", "metric", "overrides", "reference",
              "verdict", "curve", "compare", "ceiling", "headline", "ceiling_check", "longer_points", "self_trained",
              "other_ratios", "grid", "search", "report"}
REPORT_KEYS = {"order", "figures", "development"}
# a search: block (an Optuna search over a space, sweeps/search.py); name, base, overrides and the texts are the
# study's own keys
SEARCH_KEYS = {"sampler", "seed", "objective", "direction", "seeds_per_config", "trials", "pruner", "space", "storage",
               "heartbeat_interval", "grace_period", "max_retry", "out_dir", "export_dir", "startup_trials",
               "prune_from_epoch"}  # where the report puts the study, and which figures it draws (analysis/figures.py)
CELL_KEYS = {"id", "label", "overrides", "steps", "reference", "reuse", "base", "fold", "machine",
             "evaluate", "tta", "shift", "ensemble", "match", "prior"}


def is_search(path: str | Path) -> bool:
    """A study file with a ``search:`` block (run by sweeps/search.py), not cells; a file that is missing or not a
    mapping is none (its loader names the problem)."""
    p = Path(path)
    raw = yaml.safe_load(p.read_text()) if p.is_file() else None
    return isinstance(raw, dict) and "search" in raw


def search_files(folder: str | Path = "experiments/studies") -> list[Path]:
    """The study files of ``folder`` that hold a search, sorted."""
    return sorted(p for p in Path(folder).glob("*.yaml") if is_search(p))


def _check_keys(path: Path, where: str, raw: dict, allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where}expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        k = unknown[0]
        raise ConfigError(f"{path}: {where}unknown key {k!r}{_suggest(k, sorted(allowed))}; {where or 'a study file '}"
                          f"holds {sorted(allowed)}")


def grid_cells(path: Path, grid: dict) -> list[dict]:
    """``grid: {points.n_per_class: [1, 10], loss.gamma: [0, 2]}`` → one cell per combination, in the order given
    (the last key varies fastest), each id ``n_per_class=1-gamma=0`` and its overrides the combination."""

    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: grid: expected a mapping of config keys to non-empty lists of values, got {grid!r}")
    cells = []
    for values in itertools.product(*grid.values()):
        pairs = list(zip(grid, values))
        cells.append({"id": "-".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in pairs),
                      "overrides": [f"{k}={v}" for k, v in pairs]})
    return cells


@dataclass
class Cell:
    id: str
    label: str
    overrides: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyFile:
    name: str
    question: str
    hypothesis: str
    base: str
    seeds: list[int]
    cells: list[Cell]
    metric: str = "test/miou"
    overrides: list[str] = field(default_factory=list)
    reference: str | None = None  # the cell others are compared with, paired by seed
    search: dict[str, Any] | None = None  # an Optuna search (sweeps/search.py) instead of cells
    report: dict[str, Any] = field(default_factory=dict)  # order (earlier first), figures (names), development
    path: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "StudyFile":
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"study file {p} not found")
        raw = yaml.safe_load(p.read_text()) or {}
        _check_keys(p, "", raw, STUDY_KEYS)
        missing = [k for k in ("name", "question", "hypothesis", "base") if k not in raw]
        if missing:
            raise ConfigError(f"{p}: missing {missing} (a study states its question and hypothesis before it runs)")
        if "search" in raw and ("cells" in raw or "grid" in raw):
            raise ConfigError(f"{p}: a study has cells (cells:, grid:) or a search (search:), not both")
        if not any(k in raw for k in ("cells", "grid", "search")):
            raise ConfigError(f"{p}: no runs: give cells:, a grid: of config values, or a search: block")
        if "search" not in raw and "seeds" not in raw:
            raise ConfigError(f"{p}: missing ['seeds'] (the seeds every cell runs, paired)")
        _check_keys(p, "report: ", raw.get("report", {}), REPORT_KEYS)
        if "search" in raw:
            _check_keys(p, "search: ", raw["search"], SEARCH_KEYS)
        cells = []
        for c in list(raw.get("cells") or []) + (grid_cells(p, raw["grid"]) if "grid" in raw else []):
            if "id" not in c:
                raise ConfigError(f"{p}: every cell needs an id, got {c}")
            _check_keys(p, f"cell {c['id']}: ", c, CELL_KEYS)
            cells.append(Cell(c["id"], c.get("label", c["id"]), list(c.get("overrides", [])),
                              {k: v for k, v in c.items() if k not in ("id", "label", "overrides")}))
        ids = [c.id for c in cells]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{p}: cell ids repeat: {ids}")
        return cls(raw["name"], raw["question"], raw["hypothesis"], raw["base"], list(raw.get("seeds", [])), cells,
                   raw.get("metric", "test/miou"), list(raw.get("overrides", [])), raw.get("reference"),
                   raw.get("search"), dict(raw.get("report") or {}), str(p), raw)

    @property
    def order(self) -> float:
        """Where the report puts the study (``report: {order: …}``); a study without one comes last, by name."""
        return float(self.report.get("order", float("inf")))

    @property
    def development(self) -> bool:
        """A development study (``report: {development: true}``) chooses on its val metric: its tables, report
        section and log lines show that metric and nothing of test, though its exports hold test numbers."""
        return bool(self.report.get("development", False))

    def folds(self) -> dict[str, dict[str, str]]:
        """A cross-validation study's cells by fold: {fold: {arm: cell id}} in the file's order (cell ``t3-best`` with
        ``fold: 3`` is arm ``best`` of fold 3); empty for a study without folds."""
        out: dict[str, dict[str, str]] = {}
        for c in self.cells:
            if "fold" in c.extra:
                fold = str(c.extra["fold"])
                out.setdefault(fold, {})[c.id.removeprefix(f"t{fold}-")] = c.id
        return out

    def chosen(self, ids: list[str] | None = None) -> list[Cell]:
        """The cells named by ``ids`` (all when none), in the file's order; an unknown id is an error."""
        unknown = sorted(set(ids or ()) - {c.id for c in self.cells})
        if unknown:
            raise ConfigError(f"{self.path}: no cells {unknown}; it has {[c.id for c in self.cells]}")
        return [c for c in self.cells if not ids or c.id in ids]

    def cell_references(self) -> dict[str, str]:
        """Cells compared with another cell than the study's reference (``reference:`` in the cell); ``reference:
        null`` maps to "" (compared with nothing: a second arm's own reference, which is not a treatment of the
        first, and would otherwise count as one more comparison in the Holm correction)."""
        return {c.id: c.extra["reference"] or "" for c in self.cells if "reference" in c.extra}

    def base_of(self, cell: Cell) -> str:
        """The config file a cell starts from: its own ``base:`` (a study that freezes several recipe files runs each
        one as it is), else the study's."""
        return cell.extra.get("base", self.base)

    def config(self, cell: Cell, seed: int, out_dir: str = "runs/studies", export_dir: str = "results",
               machine_settings: list[str] = ()):
        return load_config(self.base_of(cell), [*self.overrides, *cell.overrides, f"name={self.name}/{cell.id}",
                                       f"seed={seed}", f"out_dir={out_dir}", f"export_dir={export_dir}",
                                       f"wandb.group={self.name}", *machine_settings])


def machine_has(cell: Cell) -> bool:
    """A cell may name the machine it is about (``machine: cuda``, the device check): elsewhere it is not run."""
    if cell.extra.get("machine") != "cuda":
        return True
    import torch

    return torch.cuda.is_available()
