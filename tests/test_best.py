"""The best recipe on any data set in one command (``pointseg best --data FILE``, ``make best DATA=FILE``), and
config files that extend another."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pointseg.cli import best_configs, data_keys
from pointseg.config import ConfigError, config_differences, load_config
from tests.conftest import ROOT, tiny_overrides

ROADS = "pointseg/data/datasets/massachusetts-roads.yaml"


def test_the_best_recipe_on_a_dataset_yaml_is_the_recipe_files_with_its_data_keys():
    teacher, student = best_configs(ROADS, ["seed=3"])
    data = ["data.dataset=" + ROADS, "data.train_groups=[train]", "data.val_groups=[val]", "data.test_groups=[test]"]
    want_t = load_config("experiments/best-teacher.yaml", [*data, "seed=3"])
    want_s = load_config("experiments/best.yaml", [*data, "seed=3",
                                                   "selftrain.teacher=runs/massachusetts-roads-best-teacher/seed{seed}"])
    assert config_differences(teacher, want_t) == [] and config_differences(student, want_s) == []
    assert (teacher.name, student.name) == ("massachusetts-roads-best-teacher", "massachusetts-roads-best")


def test_without_data_it_is_make_best_on_dubai_as_measured():
    teacher, student = best_configs(None, [])
    assert config_differences(teacher, load_config("experiments/best-teacher.yaml")) == []
    assert config_differences(student, load_config("experiments/best.yaml")) == []


def test_a_config_that_extends_a_recipe_is_that_recipe_plus_its_keys(tmp_path):
    mine = tmp_path / "my-best.yaml"
    mine.write_text(yaml.safe_dump({"extends": str(ROOT / "experiments/best.yaml"), "name": "mine",
                                    "data": {"dataset": ROADS, "scale": 1.0}}))
    got = load_config(mine)
    want = load_config("experiments/best.yaml", ["name=mine", f"data.dataset={ROADS}", "data.scale=1.0"])
    assert config_differences(got, want) == [] and got.name == "mine"
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="a circle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: extends 'nowhere\.yaml'"):
        load_config(tmp_path / "c.yaml")


def test_data_files_that_cannot_name_a_split_get_one_clear_error(tmp_path, fake_dataset):
    with pytest.raises(ConfigError, match=r"fake\.yaml: a dataset YAML given as --data needs groups named train"):
        data_keys(str(fake_dataset))  # its groups come from a tile pattern
    extra = tmp_path / "extra.yaml"
    extra.write_text("data: {scale: 1.0}\ntrain: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"extra\.yaml: --data takes .* it has \['train'\]"):
        data_keys(str(extra))


def test_pointseg_best_trains_teacher_then_student_on_the_users_data(fake_dataset, tmp_path):
    tiny = tiny_overrides(fake_dataset, tmp_path / "runs")
    data = {k.split("=", 1)[0]: yaml.safe_load(k.split("=", 1)[1]) for k in tiny if k.startswith("data.")}
    mine = tmp_path / "my-scenes.yaml"
    mine.write_text(yaml.safe_dump({"data": {k.removeprefix("data."): v for k, v in data.items()}}))
    rest = [o for o in tiny if not o.startswith(("data.", "export_dir="))]
    proc = subprocess.run([sys.executable, "-m", "pointseg", "best", "--data", str(mine), *rest],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    teacher = Path(tmp_path / "runs" / "my-scenes-best-teacher" / "seed0")
    student = Path(tmp_path / "runs" / "my-scenes-best" / "seed0")
    assert (teacher / "best.pt").exists() and (student / "final.json").exists()
    assert f"run: {student}" in proc.stdout
    stored = yaml.safe_load((student / "config.yaml").read_text())
    assert stored["selftrain"]["teacher"] == f"{teacher.parent}/seed{{seed}}"
    assert stored["points"]["strategy"] == "mixed"
