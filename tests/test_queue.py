"""The queue runs study cells over parallel lanes, skips what is exported, and keeps its deadline."""

from __future__ import annotations

import sys

import pytest
import yaml

from analysis import queue
from analysis.queue import Task, run_queue, tasks
from pointseg.config import ConfigError


def _study_file(tmp_path):
    raw = {"name": "toy", "question": "q?", "hypothesis": "h.", "base": "experiments/points.yaml", "seeds": [0, 1],
           "cells": [{"id": "a", "overrides": ["points.n_per_class=1"]},
                     {"id": "b", "overrides": ["points.n_per_class=2"]},
                     {"id": "c", "overrides": ["points.n_per_class=3"], "reuse": "other/c"},
                     {"id": "d", "overrides": ["points.n_per_class=4"], "machine": "cuda"}]}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_tasks_are_seed_major_skip_exports_reused_seeds_and_other_machines(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = _study_file(tmp_path)
    (tmp_path / "results" / "toy" / "a").mkdir(parents=True)
    (tmp_path / "results" / "toy" / "a" / "seed0.json").write_text("{}")
    (tmp_path / "results" / "other" / "c").mkdir(parents=True)
    (tmp_path / "results" / "other" / "c" / "seed0.json").write_text("{}")  # c reuses seed 0, other has no seed 1
    got = [(t.cell, t.seed) for t in tasks([path], str(tmp_path / "results"))]
    assert got == [("b", 0), ("a", 1), ("b", 1), ("c", 1)]
    assert [(t.cell, t.seed) for t in tasks([path + ":b"], str(tmp_path / "results"))] == [("b", 0), ("b", 1)]
    assert [(t.cell, t.seed) for t in tasks([path + ":b@1", path + ":a@1"], str(tmp_path / "results"))] == \
        [("b", 1), ("a", 1)]  # @seeds: one seed of each, in the order of the specs
    with pytest.raises(ConfigError, match="no cells"):
        tasks([path + ":z"])
    with pytest.raises(ConfigError, match=r"seeds \[7\] are not among the study's seeds \[0, 1\]"):
        tasks([path + ":a@7"])


def _fake(monkeypatch, seconds: dict[str, float], exit_codes: dict[str, int] | None = None, stamps=None):
    """Each task sleeps, writing when it started and ended (wall clock) to stamps/<cell>."""
    def command(self, machine_settings, export_dir):
        code = (exit_codes or {}).get(self.cell, 0)
        stamp = f"open({str(stamps / self.cell)!r}, 'w').write(f'{{t0}} {{time.time()}}')" if stamps else "0"
        return [sys.executable, "-c", f"import time, sys; t0 = time.time(); time.sleep({seconds[self.cell]}); "
                                      f"{stamp}; sys.exit({code})"]

    monkeypatch.setattr(queue.Task, "command", command)


def test_lanes_run_side_by_side_and_failures_are_reported(tmp_path, monkeypatch):
    # each sleeps 3 s, longer than an interpreter takes to start on a loaded CI machine, so all three overlap
    _fake(monkeypatch, {"a": 3.0, "b": 3.0, "c": 3.0, "d": 0.1}, {"d": 3}, stamps=tmp_path)
    rep = run_queue([Task("f", "s", c, 0) for c in "abcd"], lanes=3, deadline_s=60, log_dir=tmp_path / "logs",
                    expect_s=1, poll_s=0.05)
    assert sorted(rep["done"]) == ["s/a seed 0", "s/b seed 0", "s/c seed 0"] and rep["failed"] == ["s/d seed 0"]
    span = {c: [float(x) for x in (tmp_path / c).read_text().split()] for c in "abcd"}
    assert max(span[c][0] for c in "abc") < min(span[c][1] for c in "abc")  # a, b and c ran at the same time
    assert span["d"][0] >= min(span[c][1] for c in "abc")  # d waited for a free lane
    assert (tmp_path / "logs" / "s-a-seed0.log").exists()


def test_the_deadline_starts_nothing_that_would_end_late_and_stops_what_runs(tmp_path, monkeypatch):
    _fake(monkeypatch, {"a": 0.1, "b": 60, "c": 0.1})
    rep = run_queue([Task("f", "s", "a", 0), Task("f", "s", "b", 0), Task("f", "s", "c", 0)], lanes=2,
                    deadline_s=8.0, log_dir=tmp_path, expect_s=0.2, poll_s=0.05)
    # a and b start; a ends (0.1 s of sleep plus an interpreter's start, which takes seconds on a loaded CI
    # machine, hence the roomy deadline), then c is expected to take as long as a did and fits; b is stopped at 8 s
    assert rep["done"] == ["s/a seed 0", "s/c seed 0"] and rep["stopped"] == ["s/b seed 0"]
    rep = run_queue([Task("f", "s", "a", 0)], lanes=1, deadline_s=1.0, log_dir=tmp_path, expect_s=5)
    assert rep["not started"] == ["s/a seed 0"] and not rep["done"]


def test_the_queue_copies_what_reuse_cells_take_from_other_studies_and_refuses_another_config(tmp_path):
    import json

    from analysis.queue import copy_reused
    from analysis.study import StudyFile

    path = _study_file(tmp_path)
    study = StudyFile.load(path)
    results = tmp_path / "results"
    cfg = study.config(study.chosen(["c"])[0], 0, export_dir=str(results))
    (results / "other" / "c").mkdir(parents=True)
    (results / "other" / "c" / "seed0.json").write_text(json.dumps({"config": cfg.to_dict(), "final": {}}))
    assert copy_reused([path], str(results)) == ["toy/c seed 0"]  # seed 1: other/c has none, the queue trains it
    assert json.loads((results / "toy" / "c" / "seed0.json").read_text())["reused_from"].endswith("seed0.json")
    assert copy_reused([path], str(results)) == []  # copied once
    (results / "toy" / "c" / "seed0.json").unlink()
    other = study.config(study.chosen(["b"])[0], 0, export_dir=str(results))  # 2 clicks, not 3
    (results / "other" / "c" / "seed0.json").write_text(json.dumps({"config": other.to_dict(), "final": {}}))
    with pytest.raises(ConfigError, match=r"cell c reuses other/c, but seed 0 there ran another config "
                                          r"\(points.n_per_class: 2 there, 3 now"):
        copy_reused([path], str(results))


def test_a_student_waits_for_its_teacher_and_is_not_started_when_it_failed(tmp_path, monkeypatch):
    teacher = f"selftrain.teacher={tmp_path}/runs/studies/st/teacher/seed{{seed}}"
    raw = {"name": "st", "question": "q?", "hypothesis": "h.", "base": "experiments/points.yaml", "seeds": [0],
           "cells": [{"id": "teacher", "overrides": []}, {"id": "other", "overrides": []},
                     {"id": "student", "overrides": [teacher]}]}
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump(raw))
    todo = tasks([str(path)], str(tmp_path / "results"))
    assert [(t.cell, t.after) for t in todo] == [("teacher", ""), ("other", ""), ("student", "st/teacher seed 0")]
    # the teacher exported in an earlier session: its student is queued only if its weights are still here
    (tmp_path / "results" / "st" / "teacher").mkdir(parents=True)
    (tmp_path / "results" / "st" / "teacher" / "seed0.json").write_text("{}")
    assert [t.cell for t in tasks([str(path)], str(tmp_path / "results"))] == ["other"]
    (tmp_path / "runs" / "studies" / "st" / "teacher" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "studies" / "st" / "teacher" / "seed0" / "best.pt").write_bytes(b"x")
    assert [(t.cell, t.after) for t in tasks([str(path)], str(tmp_path / "results"))] == [("other", ""),
                                                                                       ("student", "")]
    _fake(monkeypatch, {"teacher": 2.0, "other": 0.1, "student": 0.1}, stamps=tmp_path)
    rep = run_queue(todo, lanes=2, deadline_s=60, log_dir=tmp_path / "logs", expect_s=1, poll_s=0.05)
    assert sorted(rep["done"]) == ["st/other seed 0", "st/student seed 0", "st/teacher seed 0"]
    span = {c: [float(x) for x in (tmp_path / c).read_text().split()] for c in ("teacher", "student")}
    assert span["student"][0] >= span["teacher"][1]  # a lane was free after `other`, yet the student waited
    _fake(monkeypatch, {"teacher": 0.1, "other": 0.1, "student": 0.1}, {"teacher": 2})
    rep = run_queue(todo, lanes=2, deadline_s=60, log_dir=tmp_path / "logs", expect_s=1, poll_s=0.05)
    assert rep["failed"] == ["st/teacher seed 0"] and rep["not started"] == ["st/student seed 0"]
    # room for one run but not for a teacher and its student: the teacher is not started, the other run is
    _fake(monkeypatch, {"teacher": 0.1, "other": 6.0, "student": 0.1})
    rep = run_queue(todo, lanes=2, deadline_s=15, log_dir=tmp_path / "logs", expect_s=10, poll_s=0.05)
    assert rep["done"] == ["st/other seed 0"]
    assert rep["not started"] == ["st/teacher seed 0", "st/student seed 0"]
