"""Study files run their cells seed-major, export every run, and summarise into paired tables."""

from __future__ import annotations

import pytest
import yaml

from analysis.results import confusions, load_records
from analysis.study import StudyFile, run_study
from analysis.summarize import study_table
from pointseg.config import ConfigError
from tests.conftest import tiny_overrides


def _study(tmp_path, fake_dataset, **extra):
    raw = {"name": "toy", "question": "q?", "hypothesis": "h.", "base": None, "seeds": [0, 1],
           "overrides": tiny_overrides(fake_dataset, tmp_path / "unused"),
           "cells": [{"id": "full", "overrides": ["points.supervision=full"]},
                     {"id": "points-2", "overrides": ["points.n_per_class=2"]}], **extra}
    raw = {k: v for k, v in raw.items() if v is not None}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_study_without_a_hypothesis_is_refused(tmp_path, fake_dataset):
    path = _study(tmp_path, fake_dataset, base="experiments/points.yaml", hypothesis=None)
    with pytest.raises(ConfigError, match="hypothesis"):
        StudyFile.load(path)


def test_study_runs_export_and_summarise_paired(tmp_path, fake_dataset):
    study = StudyFile.load(_study(tmp_path, fake_dataset, base="experiments/points.yaml"))
    run_study(study, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"))
    recs = load_records("toy", tmp_path / "results")
    assert sorted((r["cell"], r["seed"]) for r in recs) == [("full", 0), ("full", 1), ("points-2", 0), ("points-2", 1)]
    assert confusions(recs, "full").shape[:2] == (2, 2)  # seeds × test images
    table = study_table("toy", reference="full", root=tmp_path / "results", n_boot=100)
    row = table.set_index("cell").loc["points-2"]
    assert row["seeds"] == 2 and row["÷ full [95 %]"].count("[") == 1 and "p (Holm)" in table
    # a second call trains nothing: every run is already finished
    run_study(study, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"))
    assert len(load_records("toy", tmp_path / "results")) == 4
