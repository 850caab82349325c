"""Study files run their cells seed-major, export every run, and summarise into paired tables."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from analysis.results import confusions, load_records
from analysis.summarize import study_table
from pointseg.config import ConfigError
from sweeps.cells import StudyFile, run_study
from sweeps.studyfile import is_search, search_files
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
    ordered = study_table("toy", reference="full", root=tmp_path / "results", n_boot=100, order=["points-2", "full"])
    assert list(ordered.cell) == ["points-2", "full"]
    # a second call trains nothing: every run is already finished
    run_study(study, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"))
    assert len(load_records("toy", tmp_path / "results")) == 4


def test_a_cell_reuses_an_identical_run_of_another_study_and_refuses_a_different_one(tmp_path, fake_dataset,
                                                                                     monkeypatch):
    first = StudyFile.load(_study(tmp_path, fake_dataset, base="experiments/points.yaml", seeds=[0]))
    run_study(first, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"))
    import pointseg.train

    def no_training(*a, **k):
        raise AssertionError("a reused cell must not train")

    monkeypatch.setattr(pointseg.train, "fit", no_training)
    raw = yaml.safe_load((tmp_path / "toy.yaml").read_text())
    raw.update(name="other", cells=[{"id": "ceiling", "overrides": ["points.supervision=full"], "reuse": "toy/full"}])
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    run_study(StudyFile.load(tmp_path / "other.yaml"), out_dir=str(tmp_path / "runs"),
              export_dir=str(tmp_path / "results"))
    (rec,) = load_records("other", tmp_path / "results")
    assert rec["reused_from"].endswith("toy/full/seed0.json") and rec["config"]["points"]["supervision"] == "full"
    raw["cells"][0]["overrides"].append("loss.gamma=0")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="loss.gamma"):
        run_study(StudyFile.load(tmp_path / "other.yaml"), out_dir=str(tmp_path / "runs"),
                  export_dir=str(tmp_path / "results"))


def test_an_exported_run_is_not_trained_again_without_its_run_directory(tmp_path, fake_dataset, monkeypatch):
    """Exports copied back from another machine (or committed) resume a study; a different config is refused."""
    import shutil

    import pointseg.train

    study = StudyFile.load(_study(tmp_path, fake_dataset, base="experiments/points.yaml", seeds=[0]))
    run_study(study, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"),
              machine_settings=["wandb.mode=disabled", "train.threads=1"])
    (rec,) = [r for r in load_records("toy", tmp_path / "results") if r["cell"] == "full"]
    assert rec["machine"]["device"] == "cpu" and rec["machine"]["threads"] == 1
    assert isinstance(rec["machine"]["cpu_capability"], str) and "cpu_model" in rec["machine"]
    shutil.rmtree(tmp_path / "runs")

    def no_training(*a, **k):
        raise AssertionError("an exported run must not train again")

    monkeypatch.setattr(pointseg.train, "fit", no_training)
    run_study(study, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"))
    raw = yaml.safe_load((tmp_path / "toy.yaml").read_text())
    raw["cells"][1]["overrides"].append("loss.gamma=0")
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="loss.gamma"):
        run_study(StudyFile.load(tmp_path / "toy.yaml"), out_dir=str(tmp_path / "runs"),
                  export_dir=str(tmp_path / "results"))


def test_set_takes_machine_settings_only_and_cells_must_exist(tmp_path, fake_dataset):
    study = StudyFile.load(_study(tmp_path, fake_dataset, base="experiments/points.yaml"))
    with pytest.raises(ConfigError, match="machine settings"):
        run_study(study, out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"),
                  machine_settings=["loss.gamma=0"])
    with pytest.raises(ConfigError, match="no cells"):
        run_study(study, cells=["points-3"], out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "results"))


def test_a_shipped_copy_takes_its_code_version_from_the_environment(tmp_path, monkeypatch):
    import subprocess

    from pointseg import export

    def no_git(*a, **k):
        raise OSError("git: not found")

    export.code_version.cache_clear()
    monkeypatch.setenv("POINTSEG_COMMIT", "abc123")  # wins over a .git that is there (it may be stale)
    assert export.code_version() == {"commit": "abc123", "dirty": True}
    export.code_version.cache_clear()
    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setenv("POINTSEG_DIRTY", "0")
    try:
        assert export.code_version() == {"commit": "abc123", "dirty": False}
        export.code_version.cache_clear()
        monkeypatch.delenv("POINTSEG_DIRTY")
        assert export.code_version() == {"commit": "abc123", "dirty": True}
        export.code_version.cache_clear()
        monkeypatch.delenv("POINTSEG_COMMIT")
        assert export.code_version() == {"commit": None, "dirty": None}
    finally:
        export.code_version.cache_clear()


def test_evaluation_cells_test_another_cells_runs_again_and_pair_with_them(tmp_path, fake_dataset, monkeypatch,
                                                                           caplog, capsys):
    import sweeps.evaluations as ev

    first = StudyFile.load(_study(tmp_path, fake_dataset, base="experiments/points.yaml"))
    runs, results = str(tmp_path / "runs"), str(tmp_path / "results")
    raw = yaml.safe_load((tmp_path / "toy.yaml").read_text())
    src = "toy/points-2"
    raw.update(name="tt", reference="plain", cells=[
        {"id": "plain", "label": "as trained", "overrides": ["points.n_per_class=2"], "reuse": src},
        {"id": "tta", "evaluate": src, "tta": True},
        {"id": "ensemble", "evaluate": src, "ensemble": True},
        {"id": "colour", "evaluate": src, "shift": "colour", "reference": None},
        {"id": "colour-matched", "evaluate": src, "shift": "colour", "match": True, "reference": "colour"},
        {"id": "prior-train", "evaluate": src, "prior": "train"},
        {"id": "prior-tile", "evaluate": src, "prior": "tile"}])
    (tmp_path / "tt.yaml").write_text(yaml.safe_dump(raw))
    tt = StudyFile.load(tmp_path / "tt.yaml")
    with caplog.at_level("WARNING", logger="pointseg.study"):  # nothing to test yet: a logged skip, no export
        run_study(tt, cells=["tta"], out_dir=runs, export_dir=results)
    assert "not finished here" in caplog.text and not load_records("tt", results)

    run_study(first, out_dir=runs, export_dir=results)
    seen = []
    real_test = ev._test
    monkeypatch.setattr(ev, "_test", lambda dirs, s: seen.append(([d.name for d in dirs], s)) or real_test(dirs, s))
    run_study(tt, out_dir=runs, export_dir=results)
    by = {(r["cell"], r["seed"]): r for r in load_records("tt", results)}
    assert len(by) == 14
    # the label-shift correction: the run's own click mix (stored in best.pt), EM's mix of the training images
    # or of each test tile, and the calibration fitted on the val clicks, all in the record
    fin = by[("prior-train", 0)]["final"]
    import torch

    stored = torch.load(tmp_path / "runs" / "toy" / "points-2" / "seed0" / "best.pt", weights_only=True)["label_prior"]
    assert [fin[f"prior/source/{c}"] for c in "BLRVW"] == pytest.approx(stored)
    assert sum(fin[f"prior/target/{c}"] for c in "BLRVW") == pytest.approx(1.0)
    assert fin["prior/temperature"] > 0 and by[("prior-train", 0)]["evaluation"]["prior"] == "train"
    assert any(k.startswith("prior/target/3/") for k in by[("prior-tile", 1)]["final"])
    assert by[("tta", 1)]["evaluation"]["tta"] and by[("tta", 1)]["evaluation"]["seeds"] == [1]
    assert by[("colour-matched", 0)]["evaluation"]["match"]
    # one ensemble of both seeds, tested once, recorded under each member's seed
    assert [s for s in seen if s[1]["ensemble"]] == [(["seed0", "seed1"], ev.settings_of(tt.chosen(["ensemble"])[0]))]
    assert by[("ensemble", 0)]["final"]["test/confusion"] == by[("ensemble", 1)]["final"]["test/confusion"]
    assert by[("tta", 0)]["config"]["points"]["n_per_class"] == 2 and by[("tta", 0)]["name"] == "tt/tta"
    table = study_table("tt", "plain", root=results, n_boot=50, references=tt.cell_references()).set_index("cell")
    # two references in one study: one "compared with" column, not a column pair per reference
    assert table.loc["colour-matched", "compared with"] == "colour" and table.loc["tta", "compared with"] == "plain"
    assert table.loc["colour-matched", "− it [95 %]"] != "—" and table.loc["tta", "− it [95 %]"] != "—"
    assert not [c for c in table.columns if c.startswith("− colour")]
    # `reference: null`: compared with nothing, so not one more comparison in the Holm correction
    assert table.loc["colour", "compared with"] == "—" and table.loc["colour", "p (Holm)"] == "—"
    from analysis.summarize import main as summarize  # the CLI reads the references from the file

    summarize(["tt", "--root", results, "--studies-dir", str(tmp_path)])  # no --reference: the file's, plain
    printed = capsys.readouterr().out
    assert "compared with" in printed and "| colour " in printed
    assert "plain" in next(line for line in printed.splitlines() if line.startswith("| tta "))
    # exported: not tested again; another evaluation under the same name is refused
    monkeypatch.setattr(ev, "_test", lambda *a: (_ for _ in ()).throw(AssertionError("tested again")))
    run_study(tt, out_dir=runs, export_dir=results)
    raw["cells"][1]["tta"] = False
    (tmp_path / "tt.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="another evaluation"):
        run_study(StudyFile.load(tmp_path / "tt.yaml"), cells=["tta"], out_dir=runs, export_dir=results)


def test_an_evaluation_cell_with_an_unknown_setting_is_refused(tmp_path, fake_dataset):
    from sweeps.evaluations import settings_of, style_shift

    raw = yaml.safe_load(_study(tmp_path, fake_dataset, base="experiments/points.yaml").read_text())
    raw["cells"] = [{"id": "x", "evaluate": "toy/full", "tta": True, "shfit": "colour"}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="shfit"):
        settings_of(StudyFile.load(tmp_path / "bad.yaml").cells[0])
    for cell, words in (({"prior": "scene"}, "prior must be one of"), ({"prior": "train", "ensemble": True},
                                                                       "prior and ensemble")):
        raw["cells"] = [{"id": "x", "evaluate": "toy/full", **cell}]
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=words):
            settings_of(StudyFile.load(tmp_path / "bad.yaml").cells[0])
    image = np.full((4, 4, 3), 100, np.uint8)
    assert style_shift(image, "colour")[0, 0].tolist() == [135, 100, 65]
    with pytest.raises(ValueError, match="unknown style shift"):
        style_shift(image, "sepia")


def test_every_study_file_still_computes_the_runs_it_exported():
    """A study's table claims its exports are its cells' runs: a default that moves under a study file (a changed
    experiments/points.yaml, a new TrainConfig default) must not leave its committed runs describing another
    config. Each exported seed of each training cell must come back from the file as the same run."""
    import json
    from pathlib import Path

    from pointseg.export import read_export
    from sweeps.evaluations import is_evaluation

    root = Path(__file__).resolve().parents[1]
    checked = 0
    for path in sorted((root / "experiments" / "studies").glob("*.yaml")):
        study = StudyFile.load(path)
        for cell in study.cells:
            if is_evaluation(cell):
                continue
            for export in sorted((root / "results" / study.name / cell.id).glob("seed*.json")):
                cfg = study.config(cell, json.loads(export.read_text())["seed"], export_dir=str(root / "results"))
                # the runner's own check: an export of another config is refused, never taken for this run
                found, rec = read_export(cfg, lambda p, keys: AssertionError(
                    f"{path.name} cell {cell.id} no longer computes {p.relative_to(root)}: {keys}"))
                assert found == export and rec is not None
                checked += 1
    assert checked > 300, checked  # the committed studies: none found would check nothing


def test_a_study_file_with_a_typo_is_an_error_naming_the_closest_key(tmp_path):
    import yaml

    from pointseg.config import ConfigError
    from sweeps.cells import StudyFile

    good = {"name": "s", "question": "q", "hypothesis": "h", "base": "experiments/points.yaml", "seeds": [0],
            "cells": [{"id": "a", "overrides": []}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**good, "hypothesys": "typo"}))
    with pytest.raises(ConfigError, match=r"s\.yaml: unknown key 'hypothesys' \(did you mean 'hypothesis'\?\)"):
        StudyFile.load(path)
    path.write_text(yaml.safe_dump({**good, "cells": [{"id": "a", "resue": "x/y"}]}))
    with pytest.raises(ConfigError, match=r"cell a: unknown key 'resue' \(did you mean 'reuse'\?\)"):
        StudyFile.load(path)
    path.write_text(yaml.safe_dump(good))
    assert StudyFile.load(path).cells[0].id == "a"


def test_one_study_format_holds_cells_a_grid_or_a_search_and_its_report_metadata(tmp_path):
    import yaml

    from pointseg.config import ConfigError
    from sweeps.search import Study
    from sweeps.studyfile import StudyFile

    top = {"name": "s", "question": "q", "hypothesis": "h", "base": "experiments/points-reference.yaml"}
    path = tmp_path / "s.yaml"

    def load(**body):
        path.write_text(yaml.safe_dump({**top, **body}, sort_keys=False))
        return StudyFile.load(path)

    grid = load(seeds=[0, 1], cells=[{"id": "full", "overrides": ["points.supervision=full"]}],
                grid={"points.n_per_class": [1, 10], "loss.gamma": [0.0, 2.0]}, report={"order": 3})
    assert [c.id for c in grid.cells] == ["full", "n_per_class=1-gamma=0.0", "n_per_class=1-gamma=2.0",
                                          "n_per_class=10-gamma=0.0", "n_per_class=10-gamma=2.0"]
    assert grid.cells[2].overrides == ["points.n_per_class=1", "loss.gamma=2.0"] and grid.order == 3
    assert grid.config(grid.cells[4], 1).loss.gamma == 2.0
    search = load(overrides=["eval.val_points_per_class=20"],
                  search={"sampler": "grid", "seeds_per_config": 3, "space": {"loss.gamma": {"choices": [0, 2]}}})
    assert search.search is not None and search.cells == [] and search.order == float("inf")
    st = Study.load(path)  # the search driver reads the same file
    assert is_search(path) and not is_search("experiments/studies/gamma.yaml") and not is_search(tmp_path / "no")
    assert [p.stem for p in search_files("experiments/studies")] == ["gpu-joint-tpe", "joint-tpe", "points-grid",
                                                                     "semi-grid"]
    assert (st.name, st.base_config, st.overrides, st.budget) == ("s", top["base"], ["eval.val_points_per_class=20"], 2)
    with pytest.raises(ConfigError, match=r"search: unknown key 'sampeler' \(did you mean 'sampler'\?\)"):
        load(search={"sampeler": "grid", "space": {}})
    with pytest.raises(ConfigError, match="cells .cells:, grid:. or a search .search:., not both"):
        load(seeds=[0], cells=[{"id": "a"}], search={"space": {}})
    with pytest.raises(ConfigError, match="no runs: give cells:, a grid: of config values, or a search: block"):
        load(seeds=[0])
    with pytest.raises(ConfigError, match="grid: expected a mapping of config keys to non-empty lists"):
        load(seeds=[0], grid={"loss.gamma": []})
    with pytest.raises(ConfigError, match=r"report: unknown key 'figure' \(did you mean 'figures'\?\)"):
        load(seeds=[0], grid={"loss.gamma": [0.0]}, report={"figure": ["cells"]})


def test_a_study_names_its_figures_and_an_unknown_one_is_an_error(tmp_path):
    import yaml

    from analysis.figures import budget_figure, cells_figure, figures_of
    from pointseg.config import ConfigError
    from sweeps.studyfile import StudyFile

    body = {"name": "s", "question": "q", "hypothesis": "h", "base": "experiments/points.yaml", "seeds": [0],
            "cells": [{"id": "a"}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body))
    assert figures_of(StudyFile.load(path)) == [cells_figure]
    path.write_text(yaml.safe_dump({**body, "report": {"figures": ["budget", "cells"]}}))
    assert figures_of(StudyFile.load(path)) == [budget_figure, cells_figure]
    path.write_text(yaml.safe_dump({**body, "report": {"figures": ["cell"]}}))
    with pytest.raises(ConfigError, match=r"s\.yaml: report: figures: no figure 'cell' \(did you mean 'cells'\?\)"):
        figures_of(StudyFile.load(path))


def test_make_experiments_prints_the_table_the_headline_and_the_parts(capsys):
    from analysis.summarize import main as summarize

    summarize(["label-efficiency-crf", "--headline"])  # the committed exports
    printed = capsys.readouterr().out
    assert "| crf-20 " in printed  # the study's table
    assert "## Each framework part" in printed and "| part | default |" in printed  # each part's gain


def test_a_development_study_prints_its_val_metric_and_nothing_of_test(tmp_path):
    from types import SimpleNamespace

    from sweeps.cells import done_line

    final = {"val_points/miou": 0.5, "test/miou": 0.75, "test/iou/road": 0.25}
    dev = SimpleNamespace(name="dev", metric="val_points/miou", development=True)
    assert done_line(dev, "a", 0, final) == "dev/a seed 0: val_points/miou 0.5000"
    study = SimpleNamespace(name="t", metric="test/miou", development=False)
    assert done_line(study, "a", 1, final) == "t/a seed 1: test/miou 0.7500"
    val = done_line(SimpleNamespace(name="t", metric="val_points/miou", development=False), "a", 1, final)
    assert val == "t/a seed 1: val_points/miou 0.5000  test mIoU 0.7500"
