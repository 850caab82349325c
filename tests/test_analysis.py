"""The report reads its numbers from the runs: CIs, the significance column, REPORT.md from stored runs."""

from __future__ import annotations

import json
import math

import pytest

from analysis import report
from analysis.ablations import markdown
from analysis.stats import fmt, mean_ci
from analysis.timing import alternating
from pointseg.train import fit


def test_mean_ci_is_the_t_interval():
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) · s / √n
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([])[2] == 0
    assert mean_ci([0.2, None, float("nan"), 0.4])[2] == 2  # missing values are left out, not counted as 0
    assert fmt(*mean_ci([0.5])) == "0.500 (n=1)" and fmt(0.5, 0.1, 3) == "0.500 ± 0.100 (n=3)"


def test_feature_table_says_significant_only_when_the_interval_excludes_zero():
    row = lambda name, gain: {"feature": name, "with": (0.5, 0.1, 3), "without": (0.4, 0.1, 3),  # noqa: E731
                              "gain": gain, "cost": "c"}
    lines = markdown([row("a", (0.1, 0.05, 3)), row("b", (-0.1, 0.2, 3)), row("c", (0.1, None, 1))]).splitlines()
    assert lines[2].split("|")[5].strip() == "yes"
    assert lines[3].split("|")[5].strip() == "no"
    assert lines[4].split("|")[5].strip() == "—"  # one value: no interval, no verdict


def test_interleaved_timing_measures_each_callable():
    calls = []
    t = alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 3 and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())
    calls.clear()
    alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=1, warmup=2)
    assert calls == ["a", "a", "b", "b", "a", "b"]  # warm-up calls of each first, then the timed turns


def test_each_study_table_shows_only_its_own_parameters(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for name, key in (("a", "loss.gamma"), ("b", "semi.weight")):
        s = optuna.create_study(study_name=name, storage=url)
        s.enqueue_trial({key: 1.0})
        s.optimize(lambda t, key=key: (t.set_user_attr("val/miou", 0.5), t.set_user_attr("test/miou", 0.4),
                                       t.suggest_float(key, 0.0, 2.0))[-1], n_trials=1)
    runs = tmp_path / "runs"
    (runs / "sweeps").mkdir(parents=True)
    (tmp_path / "studies.db").rename(runs / "sweeps" / "studies.db")
    assert report.main(["--runs", str(runs), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "REPORT.md").read_text()
    a = md[md.index("### a"):md.index("### b")]
    assert "loss.gamma" in a and "semi.weight" not in a and "nan" not in a


def test_report_is_built_from_the_stored_runs(tiny_config, tmp_path):
    runs = tmp_path / "runs"
    finals = {}
    for sup in ("points", "full"):
        cfg = tiny_config(extra=[f"name={sup}", f"points.supervision={sup}", "train.epochs=1"])
        finals[sup] = fit(cfg, run_dir=runs / "experiments" / sup / "seed0", progress=False).final
    (runs / "ablations").mkdir()
    (runs / "ablations" / "table.json").write_text(json.dumps({"tta": [
        {"feature": "TTA", "with": [0.5, 0.1, 3], "without": [0.4, 0.1, 3], "gain": [0.1, 0.05, 3], "cost": "x"}]}))
    assert report.main(["--runs", str(runs), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "REPORT.md").read_text()
    for sup in ("points", "full"):
        assert f"{finals[sup]['test/miou']:.3f} (n=1)" in md  # the number of the run, as stored
    ratio = finals["points"]["test/miou"] / finals["full"]["test/miou"]
    assert f"**{ratio:.3f}**" in md
    assert "| TTA | 0.500 ± 0.100 (n=3) |" in md
    for png in ("per_class_iou.png", "val_curves.png", "feature_gains.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000


def test_ablations_without_the_baseline_runs_say_what_to_run(tmp_path, monkeypatch, capsys):
    from analysis import ablations

    monkeypatch.chdir(tmp_path)  # no runs/experiments here
    assert ablations.main(["--parts", "tta", "--seeds", "0"]) == 2
    assert "make experiments" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing half-made
