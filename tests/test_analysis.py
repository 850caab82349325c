"""The report reads its numbers from the committed exports: CIs, the significance column, a REPORT.md a fresh
clone rebuilds exactly."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis import figures, readme_block, report
from analysis.stats import fmt, interval, mean_ci, seed_interval
from pointseg.bench.timing import alternating
from tests.conftest import ROOT


def test_mean_ci_is_the_t_interval():
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) · s / √n
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([])[2] == 0
    assert mean_ci([0.2, None, float("nan"), 0.4])[2] == 2  # missing values are left out, not counted as 0
    assert fmt(*mean_ci([0.5])) == "0.500 (n=1)" and fmt(0.5, 0.1, 3) == "0.500 ± 0.100 (n=3)"


def test_an_interval_is_written_one_way_and_a_difference_carries_its_sign():
    assert interval(0.62, 0.5734, 0.649) == "0.620 [0.573, 0.649]"
    assert interval(0.068, -0.0036, 0.102, signed=True) == "+0.068 [-0.004, +0.102]"


def test_interleaved_timing_measures_each_callable():
    calls = []
    t = alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    # turns flip every round (A B, B A, ...): what one call leaves for the next favours neither side
    assert calls == ["a", "b", "b", "a", "a", "b"] and set(t) == {"a", "b"} and all(v >= 0 for v in t.values())
    calls.clear()
    alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=1, warmup=2)
    assert calls == ["a", "a", "b", "b", "a", "b"]  # warm-up calls of each first, then the timed turns


def test_committed_report_is_rebuilt_exactly_from_the_committed_exports(tmp_path, monkeypatch):
    """What a fresh clone's `make report` does: the same REPORT.md, the same figures and the same README results
    block, from results/ alone."""
    from pathlib import Path

    committed = ROOT / "report"
    monkeypatch.chdir(ROOT)  # as `make report` runs: paths in the report are relative to the repository
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    md = report.build(tmp_path / "report", Path("experiments/studies"), Path("results"), readme=readme)
    assert md.read_text() == (committed / "REPORT.md").read_text(), "report/ is stale: run `make report` and commit"
    built = {p.relative_to(md.parent) for p in md.parent.rglob("*") if p.suffix in (".md", ".png")}
    for f in sorted(built):
        assert (md.parent / f).read_bytes() == (committed / f).read_bytes(), f"{f} differs from the committed one"
    kept = {p.relative_to(committed) for p in committed.rglob("*") if p.suffix in (".md", ".png")}
    assert kept == built, "report/ holds pages or figures the report no longer makes"
    assert readme.read_text() == (ROOT / "README.md").read_text(), \
        "README.md's results block is stale: run `make report` and commit"


def test_the_report_reads_the_speed_tables_without_importing_torch():
    """The bench's imports (torch, timm, smp, torchvision) cost a report build most of its time where Python
    writes no bytecode cache; printing its tables needs none of them."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from analysis import report; "
            "md = report.bench_section(Path('results/bench.json')) + report.byo_section(Path('results')); "
            "assert md, 'no speed section'; "
            "print(sorted(m for m in ('torch', 'timm', 'segmentation_models_pytorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_report_sections_follow_the_study_files_and_their_exports(tiny_config, tmp_path, fake_dataset):
    import yaml

    from sweeps.cells import StudyFile, run_study
    from tests.conftest import tiny_overrides

    studies = tmp_path / "studies"
    studies.mkdir()
    raw = {"name": "label-efficiency", "question": "How close?", "hypothesis": "Close.",
           "base": "experiments/points.yaml", "seeds": [0, 1], "reference": "full",
           "report": {"order": 1, "figures": ["budget", "per-class", "confusion"]},
           "overrides": tiny_overrides(fake_dataset, tmp_path / "x"),
           "cells": [{"id": "full", "overrides": ["points.supervision=full"]},
                     {"id": "points-2", "overrides": ["points.n_per_class=2"]}]}
    (studies / "label-efficiency.yaml").write_text(yaml.safe_dump(raw))
    (studies / "pending.yaml").write_text(yaml.safe_dump({**raw, "name": "pending", "hypothesis": "Not yet run."}))
    run_study(StudyFile.load(studies / "label-efficiency.yaml"), out_dir=str(tmp_path / "runs"),
              export_dir=str(tmp_path / "results"))
    md = report.build(tmp_path / "report", studies, tmp_path / "results").read_text()
    pages = tmp_path / "report" / "studies"
    section = (pages / "label-efficiency.md").read_text()
    assert section.startswith("# Study: label-efficiency\n") and "[← the report](../REPORT.md)" in section
    assert "**Hypothesis** (written before the runs). Close." in section and "4 of 4" in section
    assert "÷ full [95 %]" in section
    assert "**Verdict.** pending: every run is finished; the verdict is not written yet." in section
    pending = (pages / "pending.md").read_text()
    assert "0 of 4" in pending and "No exports yet." in pending
    assert "| [label-efficiency](studies/label-efficiency.md) | How close? | pending: every run is finished" in md
    assert "| [pending](studies/pending.md) | How close? | pending: 0 of its 4 runs" in md and "| 0 of 4 |" in md
    for png in ("label-efficiency.png", "label-efficiency-per-class.png"):
        assert (pages / png).stat().st_size > 1000 and f"![label-efficiency]({png})" in section
    from analysis.results import load_records

    recs = load_records("label-efficiency", tmp_path / "results")
    panel = figures.qualitative_figure(StudyFile.load(studies / "label-efficiency.yaml"), recs, tmp_path / "report")
    assert panel and (tmp_path / "report" / panel).stat().st_size > 1000  # the exports alone draw the panel
    assert figures.qualitative_figure(StudyFile.load(studies / "label-efficiency.yaml"),
                                     [{k: v for k, v in r.items() if k != "samples"} for r in recs], tmp_path) is None
    again = tmp_path / "again"
    (again / "studies").mkdir(parents=True)
    (again / "studies" / "a-removed-study.png").write_bytes(b"stale")  # drawn by an earlier build, for a study now gone
    (again / "studies" / "a-removed-study.md").write_text("stale")
    report.build(again, studies, tmp_path / "results")
    assert (again / "REPORT.md").read_text() == md  # deterministic, seeded bootstrap
    assert not (again / "studies" / "a-removed-study.png").exists()
    assert not (again / "studies" / "a-removed-study.md").exists()
    assert (again / "studies" / "label-efficiency.png").read_bytes() == (pages / "label-efficiency.png").read_bytes()


def test_verdict_numbers_are_read_from_the_exports_never_typed():
    import pandas as pd

    df = pd.DataFrame({"cell": ["a", "a", "b"], "seed": [0, 1, 0], "val/miou": [0.4, 0.6, 0.45]})
    text = report.fill_numbers("a is {a:val/miou}, b − a is {b:val/miou - a:val/miou}.", df)
    assert text == "a is 0.500, b − a is -0.050."
    # one seed's run, alone and in a difference
    assert report.fill_numbers("{a@1:val/miou}, {a@1:val/miou - b@0:val/miou}", df) == "0.600, +0.150"
    with pytest.raises(KeyError, match="no export of cell 'c'"):
        report.fill_numbers("{c:val/miou}", df)
    with pytest.raises(KeyError, match="no export of cell 'b' seed 1"):
        report.fill_numbers("{b@1:val/miou}", df)


def test_a_verdict_names_a_paired_difference_with_its_interval():
    import pandas as pd

    def rec(cell, seed, right):  # two test images, two classes; `right` pixels of 10 on the diagonal per image
        m = [[right, 10 - right], [10 - right, right]]
        return {"cell": cell, "seed": seed, "final": {"test/per_image_confusion": {"i1": m, "i2": m}}}

    recs = [rec("a", 0, 8), rec("a", 1, 8), rec("b", 0, 6), rec("b", 1, 6), rec("b", 2, 6)]
    text = report.fill_numbers("a − b: {paired:a vs b}.", pd.DataFrame({"cell": []}), recs)
    gain = 8 / 12 - 6 / 14  # IoU of each class: tp / (tp + fp + fn), the same for both classes
    assert text == f"a − b: {gain:+.3f} [{gain:+.3f}, {gain:+.3f}]."  # identical images: no spread
    ratio = (8 / 12) / (6 / 14)
    assert report.fill_numbers("{ratio:a vs b}", pd.DataFrame({"cell": []}), recs) == \
        f"{ratio:.3f} [{ratio:.3f}, {ratio:.3f}]"
    with pytest.raises(KeyError, match="no seed has exports of both"):
        report.fill_numbers("{paired:a vs c}", pd.DataFrame({"cell": []}), recs)


def test_report_lists_runs_outside_studies_and_the_predict_bench(tmp_path):
    import json
    import shutil

    from analysis.report import byo_section

    src = next(Path("results").glob("*/*/seed0.json"))  # any committed export
    (tmp_path / "roads").mkdir()
    shutil.copy(src, tmp_path / "roads" / "seed0.json")
    (tmp_path / "bench_predict.json").write_text(json.dumps({"rows": [
        {"size": 4000, "mpx": 16.0, "seconds": 64.0, "mpx_per_s": 0.25, "peak_rss_mb": 1500.0, "chunk": 2048}]}))
    text = "\n".join(byo_section(tmp_path))
    rec = json.loads(src.read_text())
    assert f"`{rec['name']}` seed 0" in text and f"{rec['final']['test/miou']:.3f}" in text
    assert "| 4000×4000, 512 (the default then) | 16 | — | 64 | — | 0.25 | — / — | — | — | — | — | 1500 | — |" in text
    assert "timm (not timed in these rows)" in text
    # rows timed before the fold: their network row was the model as built, so their limit is that column's
    old = {"size": 4000, "mpx": 16.0, "seconds": 10.0, "mpx_per_s": 1.6, "peak_rss_mb": 1500.0, "chunk": 2048,
           "limit_mpx_per_s": 3.2, "start_seconds": 6.0}
    (tmp_path / "bench_predict_before.json").write_text(json.dumps({"rows": [old], "code": {"commit": "abcdef0"}}))
    text = "\n".join(byo_section(tmp_path))
    assert "commit abcdef0" in text and "| 3.20 / — | 0.50 | — | — |" in text
    part = {"variant": "batch norm folded", "fold": True, "halo": 64, "threads": 2, "mpx": 16.0, "seconds": 2.0}
    (tmp_path / "bench_predict_parts.json").write_text(json.dumps({"rows": [part]}))
    assert "| 16 | 2 | batch norm folded | 2.00 | 8.00 |" in "\n".join(byo_section(tmp_path))


def test_the_predict_bench_times_the_network_beside_predict_and_says_the_share(tmp_path):
    from pointseg.bench import predict as bench_predict

    out = tmp_path / "bench.json"
    assert bench_predict.main(["--sizes", "300", "--threads", "1", "--windows", "0", "64", "--network-batches", "1",
                                "--many", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["window"], r["scenes"]) for r in rows] == [(0, 1), (64, 1), (0, 3)]
    assert all(r["threads"] == 1 for r in rows) and rows[2]["mpx"] == pytest.approx(3 * rows[0]["mpx"])
    assert "| 3 × 300×300 | 0 | 1 |" in bench_predict.markdown_table(rows)  # three scenes, one call
    rows = rows[:2]
    for r in rows:  # at scale 0.5 predict reads 4 px per pixel the network sees
        assert r["limit_mpx_per_s"] == pytest.approx(4 * r["network_mpx_per_s"]) and r["mpx_per_s"] > 0
        assert r["limit_built_mpx_per_s"] == pytest.approx(4 * r["network_built_mpx_per_s"])
    table = bench_predict.markdown_table(rows)
    assert "| 300×300 | 0 | 1 |" in table and "| 300×300, window 64 | 0 | 1 |" in table
    load, r = rows[0]["load_before"], rows[0]
    assert load >= 0 and table.splitlines()[2].endswith(f"| {load:.1f} |")
    assert r["start_seconds"] > 0  # the imports and the checkpoint load, timed in a process of their own
    assert 0 < r["import_torch_seconds"] < r["import_stack_seconds"]  # torch, then torchvision and timm too
    assert f"| {r['start_seconds']:.1f} | {r['mpx_per_s']:.2f} |" in table
    row = {**r, "seconds": 10.0, "start_seconds": 6.0, "mpx": 16.0, "limit_mpx_per_s": 8.0,
           "limit_built_mpx_per_s": 3.2, "import_stack_seconds": 4.0}
    # 16 Mpx in 10 s: 0.50 of a limit of 3.2 and 0.20 of 8; in the 4 s after start-up, 0.50 of 8; a call that
    # only imported (4 s) and ran the folded network (16 / 8 = 2 s) would reach (16 / 3.2) / 6 = 0.83 of built
    assert "| 3.20 / 8.00 | 0.50 | 0.83 | 0.20 | 0.50 |" in bench_predict.markdown_table([row])
    longer = bench_predict.markdown_table([{**row, "start_seconds": 11.0}])  # start-up timed longer than predict
    assert f"| — | {row['peak_rss_mb']:.0f} |" in longer


def test_bench_of_some_parts_keeps_the_rows_of_the_others(tmp_path, monkeypatch):
    from pointseg.bench import training as bench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    old = [{"what": "pfCE γ=2 ÷ CE", "a": 1.0}, {"what": "train step, bs8", "a": 2.0},
           {"what": "reference run", "a": 3.0}]
    (tmp_path / "results" / "bench.json").write_text(json.dumps({"torch": "x", "threads": 2, "rows": old}))
    row = {"what": "reference run (new)", "a": 4.0, "b": 1.0, "ratio": 4.0, "goal": "≤ 0.66", "met": False, "unit": "s"}
    monkeypatch.setattr(bench, "reference_rows", lambda bare_steps, config: [{**row, "what": f"{config} run"}])
    assert bench.main(["--parts", "reference"]) == 0
    rows = json.loads((tmp_path / "results" / "bench.json").read_text())["rows"]
    assert [r["what"] for r in rows] == ["pfCE γ=2 ÷ CE", "train step, bs8", "experiments/full.yaml run"]
    assert rows[-1]["part"] == "reference" and rows[-1]["cpu"] == bench.cpu_label()
    from analysis.report import bench_section

    mixed = tmp_path / "mixed.json"  # a row of an older run, which did not record its CPU, beside a new one
    mixed.write_text(json.dumps({"torch": "x", "threads": 2, "rows": [row, rows[-1]]}))
    text = "\n".join(bench_section(mixed))
    assert f"Timed on {bench.cpu_label()}; 1 older row did not record its CPU." in text
    # rows of two CPUs in one table: each row says which (the older one: not recorded)
    lines = [line for line in text.splitlines() if line.startswith("| reference run (new)")]
    assert lines[0].endswith("| not recorded |") and "timed on" in text
    from pointseg.bench.table import markdown_table, short_cpu
    assert short_cpu("Intel(R) Xeon(R) Processor (AVX512)") == "Intel Xeon (AVX512)"
    assert "timed on" not in markdown_table([rows[-1]])  # one CPU: the line under the table says it
    # another schedule's reference rows sit beside the default's; running it again replaces only its own
    for _ in range(2):
        assert bench.main(["--parts", "reference", "--config", "experiments/full-fast.yaml"]) == 0
    rows = json.loads((tmp_path / "results" / "bench.json").read_text())["rows"]
    assert [r["what"] for r in rows][2:] == ["experiments/full.yaml run", "experiments/full-fast.yaml run"]


def test_step_bench_variants_train_and_are_rated_against_the_plain_step(monkeypatch):
    from pointseg.bench import training as bench

    step = bench._step_fn(2, channels_last=True, bf16=True)  # a real bf16-autocast step runs and returns nothing
    assert step() is None
    assert bench._step_fn(2, channels_last=True, reduction_bn=True, fused_adamw=True)() is None
    monkeypatch.setattr(bench, "alternating", lambda fns, repeats, warmup: {k: 1.0 for k in fns})
    monkeypatch.setattr(bench, "_step_fn", lambda **kw: None)
    rows = bench.step_rows(repeats=1)
    assert len(rows) == len(bench.STEP_VARIANTS) - 1
    by = {r["what"].split(" (")[0]: r for r in rows}
    # same seconds per step: img/s scale with the batch, rated against batch 16's
    assert by["train step, channels_last bs32"]["ratio"] == 2.0 and by["train step, channels_last bs8"]["ratio"] == 0.5
    assert by["train step, channels_last bs16 bf16 autocast"]["ratio"] == 1.0


def test_the_compile_row_weighs_the_first_call_against_the_saving_per_step(monkeypatch):
    from pointseg.bench import training as bench

    # stand-ins: the row's arithmetic, not the compiler, is tested (first calls: 4 s compiled, 1 s not)
    monkeypatch.setattr(bench, "first_call_seconds", lambda compiled: 4.0 if compiled else 1.0)
    monkeypatch.setattr(bench, "alternating", lambda fns, repeats, warmup: {"eager": 0.010, "compiled": 0.006})
    row = bench.compile_row(repeats=2)
    assert row["a"] == pytest.approx(3.0 / 0.004) and row["b"] == 1080 and row["met"]  # the default run's steps
    assert "3.0 s more than uncompiled; eager 10.00 ms, compiled 6.00 ms" in row["what"]
    monkeypatch.setattr(bench, "alternating", lambda fns, repeats, warmup: {"eager": 0.008, "compiled": 0.010})
    assert bench.compile_row(repeats=2)["a"] == float("inf") and not bench.compile_row(repeats=2)["met"]


def test_diagnostics_figure_draws_the_logged_diagnostics_and_nothing_without_them(tmp_path, monkeypatch):
    from sweeps.cells import Cell, StudyFile

    study = StudyFile("s", "q", "h", "b", [0, 1], [Cell("a", "method A"), Cell("b", "method B")])
    recs = [{"cell": c, "seed": s, "history": [{"epoch": e, "diag/unlabelled_acc": 0.5 + 0.05 * e,
                                                **({"diag/pseudo_precision": 0.6} if c == "b" else {})}
                                               for e in (1, 2, 3)]} for c in "ab" for s in (0, 1)]
    drawn, save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: drawn.append(fig) or save(fig, out, name))
    name = figures.diagnostics_figure(study, recs, tmp_path)
    assert name == "s-diagnostics.png" and (tmp_path / name).stat().st_size > 1000
    # method B's lines have one colour in both panels though only B logged the second one
    colours = [{line.get_label(): line.get_color() for line in ax.get_legend().get_lines()} for ax in drawn[0].axes]
    assert colours[0]["method B"] == colours[1]["method B"], colours
    bare = [{**r, "history": [{"epoch": 1, "train/loss": 1.0}]} for r in recs]
    assert figures.diagnostics_figure(study, bare, tmp_path) is None


def test_pseudo_classes_figure_stacks_each_runs_logged_class_shares_beside_the_unclicked_pixels(tmp_path, monkeypatch):
    from sweeps.cells import Cell, StudyFile

    study = StudyFile("s", "q", "h", "b", [0, 1], [Cell("fm", "FixMatch")])
    share = {0: (0.9, 0.1), 1: (0.2, 0.8)}  # seed 0 names mostly A, seed 1 mostly B: a seed mean would show 0.55
    recs = [{"cell": "fm", "seed": s, "samples": {"classes": ["A", "B"], "colors": [[255, 0, 0], [0, 0, 255]]},
             "history": [{"epoch": e, "diag/pseudo_share/A": share[s][0], "diag/pseudo_share/B": share[s][1],
                          "diag/unlabelled_share/A": 0.3, "diag/unlabelled_share/B": 0.7} for e in (1, 2)]}
            for s in (0, 1)]
    drawn, save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: drawn.append(fig) or save(fig, out, name))
    assert figures.pseudo_classes_figure(study, recs, tmp_path) == "s-pseudo-classes.png"
    for ax, s in zip(drawn[0].axes, (0, 1)):
        a, b = ax.containers  # one bar container per class: epochs 1, 2, then all unclicked pixels
        assert [p.get_height() for p in a] == pytest.approx([share[s][0]] * 2 + [0.3])
        assert [p.get_y() for p in b] == pytest.approx([share[s][0]] * 2 + [0.3])  # stacked on A
        assert tuple(a[0].get_facecolor()[:3]) == (1.0, 0.0, 0.0)  # the data set's own class colour
    bare = [{**r, "history": [{"epoch": 1, "diag/unlabelled_acc": 0.5}]} for r in recs]
    assert figures.pseudo_classes_figure(study, bare, tmp_path) is None


def test_the_headline_names_the_best_cell_the_smallest_budget_at_0_9_and_the_bar():
    from analysis.headline import headline_section

    def rec(cell, seed, right, clicks, supervision="points"):  # two identical test images: no bootstrap spread
        m = [[right, 100 - right], [100 - right, right]]
        cfg = {"points": {"supervision": supervision, "n_per_class": clicks}, "semi": {"method": "gated_crf",
                                                                                     "weight": 0.1}}
        return {"cell": cell, "seed": seed, "config": cfg, "final": {"test/per_image_confusion": {"i1": m, "i2": m}}}

    recs = [rec(c, s, right, n, sup) for s in range(3) for c, right, n, sup in
            (("full", 90, 10, "full"), ("p1", 70, 1, "points"), ("p5", 85, 5, "points"), ("p50", 90, 50, "points"))]
    text = "\n".join(headline_section(recs, "full", ["full", "p1", "p5", "p50"], "toy"))
    iou = lambda r: r / (200 - r)  # noqa: E731  tp / (tp + fp + fn), the same for both classes
    assert f"test mIoU {iou(90):.3f}" in text
    assert "**Best point-supervised at ≤ 20 clicks per class**: `p5`" in text  # p50 is better, but over 20
    assert "**Best point-supervised at any budget**: `p50`" in text
    ratio5 = iou(85) / iou(90)
    assert ratio5 >= 0.9 > iou(70) / iou(90)
    assert f"reaching 0.9 of the ceiling**: `p5` (pfCE + gated CRF (0.1), 5 clicks per class), ÷ ceiling " \
           f"{ratio5:.3f} [{ratio5:.3f}, {ratio5:.3f}]" in text
    assert ratio5 < 0.95 and "**The bar**" in text and text.rstrip().endswith("not met.")


def test_the_headline_says_how_far_the_ceiling_is_from_converged():
    from analysis.headline import ceiling_check_line

    def rec(cell, seed, right):  # two identical test images: no bootstrap spread
        m = [[right, 100 - right], [100 - right, right]]
        return {"cell": cell, "seed": seed, "config": {}, "final": {"test/per_image_confusion": {"i1": m, "i2": m}}}

    iou = lambda r: r / (200 - r)  # noqa: E731
    gained = [rec("ref", s, 90) for s in range(2)] + [rec("long", s, 92) for s in range(2)]
    line = ceiling_check_line(gained, "conv", "ref", "long")
    d, r = iou(92) - iou(90), iou(90) / iou(92)
    assert line.startswith("* **Is the ceiling converged?** Not quite:")
    assert f"by {d:+.3f} [{d:+.3f}, {d:+.3f}] (2 seeds, paired)" in line and f"multiplied by {r:.3f}" in line
    level = [rec("ref", s, 90) for s in range(2)] + [rec("long", s, 90) for s in range(2)]
    assert "converged?** Yes" in ceiling_check_line(level, "conv", "ref", "long")
    assert "Not measured yet" in ceiling_check_line(gained[:2], "conv", "ref", "long")
    # a ratio from another study (both arms longer, self-trained): only from enough shared seeds, with the bar
    from analysis.headline import other_ratio_line

    def pts(seed, right, clicks=20):
        return {**rec("pts", seed, right), "config": {"points": {"n_per_class": clicks, "supervision": "points"}}}

    both = gained + [pts(s, 85) for s in range(3)]
    assert "not measured yet (2 of 3 seeds of both" in other_ratio_line(both, "Longer", "cp", "pts", "long", 3)
    r = iou(85) / iou(92)
    assert other_ratio_line(both, "Longer", "cp", "pts", "long", 2) == (
        f"* **Longer** (`cp`: `pts` (pfCE) ÷ `long`): ÷ ceiling {r:.3f} [{r:.3f}, {r:.3f}] (2 seeds, paired); the bar: "
        "not met.")
    close = gained + [pts(s, 91) for s in range(2)]  # ratio 0.98 at 20 clicks: met; at 50 clicks: not
    assert other_ratio_line(close, "Self", "st", "pts", "long", 2).endswith("the bar: met.")
    far = gained + [pts(s, 91, clicks=50) for s in range(2)]
    assert other_ratio_line(far, "Self", "st", "pts", "long", 2).endswith("the bar: not met.")
    # an estimate that rounds to the bar says on which side of it it falls
    def right_for(ratio):  # the diagonal count whose IoU is ``ratio`` × the ceiling's
        target = ratio * iou(92)
        return 200 * target / (1 + target)

    below = other_ratio_line(gained + [pts(s, right_for(0.9497)) for s in range(2)], "Edge", "st", "pts", "long", 2)
    assert "÷ ceiling 0.950 [" in below and below.endswith("the bar: not met (0.9497 < 0.95).")
    above = other_ratio_line(gained + [pts(s, right_for(0.9503)) for s in range(2)], "Edge", "st", "pts", "long", 2)
    assert above.endswith("the bar: met (0.9503 ≥ 0.95).")
    assert "(0.98" not in other_ratio_line(close, "Self", "st", "pts", "long", 2)  # far from the bar: no digits added
    # one ensemble per arm: said so, and never judged against the bar, which asks for independent seeds
    line = other_ratio_line(close, "Ens", "st", "pts", "long", 2, note="one ensemble per arm", judge=False)
    assert "(2 seeds, paired; one ensemble per arm); not judged against the bar" in line and "met" not in line


def test_each_framework_part_is_paired_with_the_same_runs_without_it_or_says_what_to_run(tmp_path):
    from analysis.headline import PARTS, parts_rows, parts_section

    def write(cell, seed, right):
        m = [[right, 100 - right], [100 - right, right]]
        path = tmp_path / "label-efficiency-crf" / cell / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seed": seed, "final": {"test/per_image_confusion": {"i1": m, "i2": m}}}))

    for seed in (0, 1):
        write("crf-10", seed, 80)
        write("pfce-10", seed, 70)
    write("pfce-10", 2, 70)  # a seed only one arm has is left out of the pairing
    rows = parts_rows(tmp_path, n_boot=50)
    assert len(rows) == len(PARTS)
    crf = rows[0]
    gain = 80 / 120 - 70 / 130
    assert crf["seeds"] == 2 and crf["gain"] == f"{gain:+.3f} [{gain:+.3f}, {gain:+.3f}]"
    assert all(r["gain"].startswith("not run yet") for r in rows[1:])
    assert "| unlabelled pixels: gated CRF loss, weight 0.1 | on |" in "\n".join(parts_section(tmp_path))


def test_a_curve_puts_the_factor_values_in_order_at_the_mean_of_their_seeds(tmp_path, monkeypatch):
    from analysis.results import frame, load_records
    from sweeps.cells import StudyFile

    study = StudyFile.load(ROOT / "experiments/studies/crf-weight.yaml")
    recs = load_records("crf-weight", ROOT / "results")
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: drawn.setdefault(name, fig) and name)
    name = figures.curve_figure(study, recs, tmp_path)
    ax = drawn[name].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.03", "0.1", "0.3"]
    groups = frame(recs).groupby("semi_weight")["test/miou"]
    assert ax.lines[0].get_ydata() == pytest.approx(groups.mean().sort_index().to_numpy())
    # the whiskers are the tables' t-interval over seeds, not seaborn's bootstrap of 3 seeds (about their range)
    whiskers = [(np.nanmin(line.get_ydata()), np.nanmax(line.get_ydata())) for line in ax.lines[1:]]
    assert np.array(whiskers) == pytest.approx(np.array([seed_interval(v) for _, v in sorted(groups)]))
    v = groups.get_group(0.3).to_numpy()
    assert seed_interval(v)[1] - seed_interval(v)[0] > v.max() - v.min()  # with 3 seeds: wider than their range
    assert seed_interval([0.5]) == (0.5, 0.5)


def test_the_readme_block_is_cut_from_the_report_and_written_only_between_its_markers(tmp_path):
    md = ["# r", "", "## Headline", "", "* **Ceiling**: 0.673.", "", "## Method", "", "* loss", "",
          "## Study: a-b", "", "**Question.** q", "", "**Verdict.** Rejected. The curve is flat after 0.1, "
          "which no seed contradicts in the table of this study; see the paired rows.", "",
          "## Study: c", "", "**Verdict.** " + "Confirmed at every budget and on both tiles " * 3 + "here. More.", ""]
    lines = readme_block.block(md, "report/REPORT.md")
    text = "\n".join(lines)
    assert lines[0] == readme_block.START and lines[-1] == readme_block.END
    assert "* **Ceiling**: 0.673." in text and "loss" not in text  # the headline, not the method
    # a short first sentence takes the second along; a long one stands alone and says there is more
    assert "* [Study: a-b](report/REPORT.md#study-a-b): Rejected. The curve is flat after 0.1, which" in text
    assert text.count("see the paired rows.") == 1 and "here. …" in text and "More." not in text
    figure = readme_block.block(["## Abstract", "", "Held out: 0.9.", "", "## Results", "", "![ladder](ladder.png)"],
                                "report/REPORT.md")
    assert figure.index("Held out: 0.9.") < figure.index("![ladder](report/ladder.png)")  # the claim leads
    linked = "\n".join(readme_block.block(md, "report/REPORT.md", {"Study: c": "report/studies/c.md"}))
    assert "* [Study: c](report/studies/c.md): Confirmed" in linked  # a study on its own page is linked there
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{readme_block.START}\nold\n{readme_block.END}\nafter\n")
    readme_block.replace_block(readme, lines)
    assert readme.read_text().startswith("# x\n\nbefore\n" + readme_block.START) and "old" not in readme.read_text()
    assert readme.read_text().endswith(readme_block.END + "\nafter\n")
    assert readme_block.committed_block(readme) == lines
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="README.md: needs one line"):
        readme_block.replace_block(readme, lines)


def test_a_readme_anchor_is_the_one_github_makes_for_the_heading():
    assert readme_block.anchor("Study: label-efficiency-crf") == "study-label-efficiency-crf"
    assert readme_block.anchor("Each framework part") == "each-framework-part"
    assert readme_block.anchor("Speed (`make bench`, torch 2.13.0+cu130, 2 threads)") == \
        "speed-make-bench-torch-2130cu130-2-threads"


def test_the_readme_gives_the_default_and_reference_runs_the_minutes_the_bench_measured():
    """The README's times for one run are typed prose outside the generated block: it once said 19 min long after
    the bench had measured 7. Each such claim must round the bench's whole-fit row of the run it names: the default
    run (experiments/full.yaml, the quick schedule) and the reference run (experiments/full-reference.yaml)."""
    rows = json.loads((ROOT / "results" / "bench.json").read_text())["rows"]
    prose = " ".join((ROOT / "README.md").read_text().split())
    for label, pattern in (("default run", r"default run takes (?:about )?(\d+) min"),
                           ("full-reference run", r"(?:reference|such) run takes (?:about )?(\d+) min")):
        fit = next(r for r in rows if r["what"].startswith(f"{label} (") and "whole fit" in r["what"])
        claims = re.findall(pattern, prose)
        assert claims, f"the README no longer says how long the {label} takes: update this test"
        assert {int(c) for c in claims} == {round(fit["a"] / 60)}, (label, claims, fit["a"], fit["cpu"])


def test_self_trained_runs_are_named_so_and_their_pseudo_labels_tabled():
    from analysis.report import _pseudo_label_table
    from analysis.results import method_label

    crf = {"points": {"supervision": "points"}, "semi": {"weight": 0.1, "method": "gated_crf"}}
    assert method_label(crf) == "pfCE + gated CRF (0.1)"
    self_trained = {**crf, "selftrain": {"teacher": "runs/t/seed{seed}"}}
    assert method_label(self_trained) == "pfCE + gated CRF (0.1), self-trained"
    assert method_label({"points": {"supervision": "points"}, "selftrain": {"teacher": None}}) == "pfCE"
    mixed = {**crf, "points": {"supervision": "points", "strategy": "mixed"}}
    assert method_label(mixed) == "pfCE + gated CRF (0.1), mixed clicks"
    balanced = {**crf, "selftrain": {"teacher": "t", "proportion": 0.5}}
    assert method_label(balanced).endswith("self-trained (class-balanced)")
    st = {"teacher_name": "cp/crf-20-3200", "teacher_seed": 1, "threshold": 0.9,
          "diagnostic": {"pseudo_coverage": 0.6519, "pseudo_precision": 0.9642}}
    recs = [{"cell": "st-20", "seed": 1, "points": {"selftrain": st}}, {"cell": "teacher", "seed": 1, "points": {}}]
    md = "\n".join(_pseudo_label_table(recs))
    assert "| st-20  |      1 | `cp/crf-20-3200` seed 1 |" in md and "0.652" in md and "0.964" in md
    assert len([ln for ln in md.splitlines() if ln.startswith("|")]) == 3  # header, rule, st-20: no teacher row
    assert _pseudo_label_table(recs[1:]) == []
    # per class, from a recomputation (runs that recorded only totals), mean over seeds
    per = {"Road": {"coverage": 0.5, "precision": 0.8}, "Water": {"coverage": None, "precision": None}}
    md = "\n".join(_pseudo_label_table(recs, {"st-20/seed1": {"diagnostic": {"per_class": per}}}))
    assert "| st-20  | Road    | 0.900 | 0.500      | 0.800       |" in md
    assert "| Water   | 0.900 | —          | —           |" in md
    # class-balanced bars: each class's own, from the run's record
    cb = {**st, "proportion": 0.5, "class_thresholds": {"Road": 0.62, "Water": 0.9},
          "diagnostic": {**st["diagnostic"], "per_class": per}}
    md = "\n".join(_pseudo_label_table([{"cell": "st-cb", "seed": 1, "points": {"selftrain": cb}}]))
    assert "per class: 0.5 of each, ≤ 0.9" in md and "| st-cb  | Road    | 0.620 | 0.500      | 0.800       |" in md


def test_runs_with_a_teacher_table_their_last_pseudo_labelling_epoch_per_seed():
    from analysis.report import _last_epoch_diagnostics

    def rec(cell, seed, precision):
        h = [{"epoch": 1, "diag/unlabelled_acc": 0.4}]  # an epoch before the teacher labelled anything
        h += [{"epoch": e, "diag/unlabelled_acc": 0.5, "diag/pseudo_coverage": 0.01 * e,
               "diag/pseudo_precision": precision if e == 3 else 0.2} for e in (2, 3)]
        return {"cell": cell, "seed": seed, "history": h, "final": {"test/miou": 0.4 + precision / 10}}

    recs = [rec("fm", 1, 0.45), rec("fm", 0, 0.97), {"cell": "pfce", "seed": 0, "final": {"test/miou": 0.5},
                                                     "history": [{"epoch": 3, "diag/unlabelled_acc": 0.6}]}]
    lines = "\n".join(_last_epoch_diagnostics(recs)).splitlines()
    # seed order, the last epoch that pseudo-labelled, pfCE alone not a row
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("| fm")]
    assert rows == [["fm", "0", "3", "0.030", "0.970", "0.500", "0.497"],
                    ["fm", "1", "3", "0.030", "0.450", "0.500", "0.445"]], rows
    assert _last_epoch_diagnostics(recs[2:]) == []  # no teacher, no table
    assert "Per class" not in "\n".join(_last_epoch_diagnostics(recs))  # runs from before the per-class keys

    recs[0]["history"][-1].update({"diag/pseudo_share/Road": 0.7, "diag/pseudo_true_share/Road": 0.6,
                                   "diag/unlabelled_share/Road": 0.2})
    recs[0]["history"][1]["diag/pseudo_share/Road"] = 0.1  # an earlier epoch: not the one shown
    lines = "\n".join(_last_epoch_diagnostics(recs)).splitlines()
    assert [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if "| Road" in ln] == [
        ["fm", "1", "Road", "0.700", "0.600", "0.200"]]
    from analysis.results import frame

    assert frame([{**recs[0], "config": {"points": {"supervision": "points", "n_per_class": 20, "strategy": "s"},
                                         "loss": {"gamma": 2.0}, "train": {"epochs": 1, "steps_per_epoch": 1,
                                                                           "lr": 0.1, "batch_size": 1},
                                         "eval": {"select": "last"}}, "code": None}]
                 ).loc[0, "last/diag/pseudo_share/Road"] == 0.7  # a verdict can name it


def test_reruns_pair_trainings_of_the_same_run_and_leave_out_copies_evaluations_and_other_configs(tmp_path):
    import copy

    from analysis.reruns import reruns_section
    from pointseg.config import load_config

    base = load_config("experiments/points.yaml").to_dict()

    def write(study, cell, seed, right, threads=None, gamma=None, **extra):
        cfg = copy.deepcopy(base)
        cfg.update(name=f"{study}/{cell}", seed=seed)
        cfg["train"]["threads"] = threads  # a machine setting: not part of what the run computes
        if gamma is not None:
            cfg["loss"]["gamma"] = gamma
        m = [[right, 100 - right], [100 - right, right]]  # two identical test images: no spread over images
        final = {"test/miou": right / 100, "test/per_image_confusion": {"i1": m, "i2": m}}
        rec = {"seed": seed, "config": cfg, "final": final, "code": {"commit": "abcdef123", "dirty": False},
               "machine": {"device": "cpu", "threads": threads} if threads else None, **extra}
        path = tmp_path / study / cell / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))

    write("a", "x", 0, 60, threads=1)
    write("b", "y", 0, 62, threads=2)  # the same run, trained again with 2 threads
    write("a", "x", 1, 55, threads=1)
    write("b", "y", 1, 53)  # ... by a run that did not record its threads
    write("f", "w", 0, 80, threads=1)  # a third training of a/x, far off: its interval excludes zero
    write("f", "w", 1, 75, threads=1)
    write("c", "copy", 0, 60, reused_from="results/a/x/seed0.json")  # a copy is no training
    write("d", "tta", 0, 70, evaluation={"of": "a/x"})  # nor is a test-time evaluation of a/x
    write("e", "z", 0, 60, threads=1, gamma=0.5)  # another config
    md = "\n".join(reruns_section(tmp_path))
    rows = [ln for ln in md.splitlines() if ln.startswith("| pfCE")]
    assert len(rows) == 4  # seed 0: a/x with b/y and with f/w; seed 1: the same
    assert "`a/x` (CPU, 1 thread, `abcdef1`)" in rows[0] and "`b/y` (CPU, 2 threads" in rows[0]
    assert rows[0].endswith("| -0.020 |") and "threads not recorded" in rows[2] and rows[2].endswith("| +0.020 |")
    assert "4 pairs" in md and "by 0.110 on average (largest 0.200; 0 of 4 identical)" in md
    assert "against 0.063 between two seeds" in md  # a/x, b/y, f/w: 0.05, 0.09, 0.05
    compared = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert compared[0].startswith("| `a/x` | `b/y` | 0, 1 |") and compared[0].endswith("| yes |")
    assert compared[1].startswith("| `a/x` | `f/w` | 0, 1 |") and compared[1].endswith("| **no** |")
    assert "1 of 2 intervals hold zero." in md
    assert reruns_section(tmp_path / "nothing") == []


def test_frozen_step_bench_leaves_the_frozen_levels_alone_and_trains_the_rest(monkeypatch):
    """The bench's "encoder levels frozen" row times the step the trainer takes with model.freeze_levels."""
    from pointseg.bench import training as bench

    built = {}
    real = bench._model

    def spy():
        built["model"] = real()
        built["before"] = {n: p.detach().clone() for n, p in built["model"].named_parameters()}
        return built["model"]

    monkeypatch.setattr(bench, "_model", spy)
    bench._step_fn(2, channels_last=True, freeze_levels=2)()
    now = dict(built["model"].named_parameters())
    moved = {n for n, p in built["before"].items() if not torch.equal(now[n], p)}
    assert not any(n.startswith(("net.encoder.model.conv_stem", "net.encoder.model.blocks.0.",
                                 "net.encoder.model.blocks.1.")) for n in moved)
    assert any(n.startswith("net.encoder.model.blocks.2.") for n in moved)


def test_confusion_metrics_read_shares_precision_and_recall_from_the_test_matrix():
    from analysis.results import confusion_metrics

    final = {"test/iou/Land": 0.5, "test/iou/Road": 0.2, "test/confusion": [[6, 2], [1, 1]]}  # rows true
    m = confusion_metrics(final)
    assert m["test/share/Road"] == pytest.approx(3 / 10)  # predicted Road: 2 + 1 of 10 pixels
    assert m["test/true_share/Road"] == pytest.approx(2 / 10)  # true Road: 1 + 1 of 10 pixels
    assert m["test/precision/Road"] == pytest.approx(1 / 3) and m["test/recall/Road"] == pytest.approx(1 / 2)
    assert m["test/precision/Land"] == pytest.approx(6 / 7) and m["test/recall/Land"] == pytest.approx(6 / 8)
    assert confusion_metrics({"test/iou/Land": 0.5}) == {}  # an export without a matrix adds nothing


def test_schedule_curves_figure_draws_each_cells_seed_mean_val_curve_in_its_panel(tmp_path, monkeypatch):
    from sweeps.cells import Cell, StudyFile

    study = StudyFile("s", "q", "h", "b", [0, 1], [Cell("long", "full, long"), Cell("short", "full, short"),
                                                   Cell("pts", "points")])
    val = {("long", 0): 0.4, ("long", 1): 0.6, ("short", 0): 0.3, ("short", 1): 0.5, ("pts", 0): 0.2, ("pts", 1): 0.2}
    sup = {"long": "full", "short": "full", "pts": "points"}
    recs = [{"cell": c, "seed": s, "config": {"points": {"supervision": sup[c]}},
             "history": [{"epoch": e, "step": 10 * e, "val/miou": val[c, s] + 0.01 * e} for e in (1, 2)]}
            for c in sup for s in (0, 1)]
    drawn, save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, out, name: drawn.append(fig) or save(fig, out, name))
    assert figures.schedule_curves_figure(study, recs, tmp_path) == "s-val-curves.png"
    full, points = drawn[0].axes

    def curves(ax):  # legend entry → the y values of the data line of its colour
        data = {ln.get_color(): list(ln.get_ydata()) for ln in ax.get_lines() if len(ln.get_ydata())}
        return {t.get_text(): data[ln.get_color()] for t, ln in zip(ax.get_legend().get_texts(),
                                                                     ax.get_legend().get_lines())}

    assert curves(full) == {"full, long": pytest.approx([0.51, 0.52]), "full, short": pytest.approx([0.41, 0.42])}
    assert curves(points) == {"points": pytest.approx([0.21, 0.22])}
    assert figures.schedule_curves_figure(study, [{**r, "history": [{"epoch": 1}]} for r in recs], tmp_path) is None


def test_the_bench_recomputes_a_tiles_miou_from_best_pt_as_the_trainer_reported_it(tmp_path):
    """The speed bar's tile-8 number is recomputed from the run's best.pt by `pointseg evaluate`, not taken from the
    trainer: on a finished run with two test tiles, each tile's number must be the one the trainer reported."""
    from pointseg.bench import training as bench
    from pointseg.config import load_config
    from pointseg.train import fit
    from tests.conftest import make_dataset, tiny_overrides

    data = make_dataset(tmp_path / "data", tiles=4)
    cfg = load_config("experiments/full.yaml", tiny_overrides(data, tmp_path / "runs") + ["data.test_groups=['3','4']"])
    res = fit(cfg, progress=False)
    tiles = {g: res.final[f"test/group/{g}/miou"] for g in "34"}
    assert tiles["3"] != tiles["4"]  # else a recomputation of the wrong tile would pass
    assert {g: bench.recomputed_miou(res.run_dir, g) for g in "34"} == pytest.approx(tiles, abs=1e-9)


def test_a_development_study_shows_its_val_metric_paired_and_nothing_of_test(tmp_path):
    """A study whose metric is a val metric chooses on it: its table and report section pair that metric by seed
    and never print a test number, though its exports hold them."""
    import yaml

    from analysis.report import study_section
    from analysis.summarize import study_table
    from sweeps.studyfile import StudyFile

    src = json.loads(Path("results/heldout-roads/best/seed0.json").read_text())
    vals = {("a", 0): 0.70, ("a", 1): 0.60, ("b", 0): 0.75, ("b", 1): 0.62}
    for (cell, seed), v in vals.items():
        rec = json.loads(json.dumps(src))
        rec.update(name=f"dev/{cell}", seed=seed)
        for part in (rec["config"], rec["final"]):
            part.update(name=f"dev/{cell}", seed=seed)
        rec["final"]["val_points/miou"] = v
        rec["final"]["test/miou"] = 0.123456  # a number no development table may show
        path = tmp_path / "results" / "dev" / cell / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    table = study_table("dev", "a", "val_points/miou", tmp_path / "results", order=["a", "b"], development=True)
    assert "test mIoU [bootstrap 95 %]" in study_table("dev", "a", "val_points/miou", tmp_path / "results").columns
    assert list(table.cell) == ["a", "b"] and not any("test" in c for c in table.columns)
    diffs = [0.75 - 0.70, 0.62 - 0.60]
    m, h, _ = mean_ci(diffs)
    assert table.iloc[1]["− a, paired by seed [95 %]"] == interval(m, m - h, m + h, signed=True)
    # each cell against a reference of its own: one "compared with" column names it, the difference beside it
    own = study_table("dev", "a", "val_points/miou", tmp_path / "results", references={"a": "b"},
                      order=["a", "b"], development=True)
    assert list(own["compared with"]) == ["b", "a"] and "− it, paired by seed [95 %]" in own.columns
    assert own.iloc[0]["− it, paired by seed [95 %]"] == interval(-m, -m - h, -m + h, signed=True)
    body = {"name": "dev", "question": "q?", "hypothesis": "h.", "base": "experiments/best.yaml", "seeds": [0, 1],
            "metric": "val_points/miou", "reference": "a", "report": {"development": True},
            "cells": [{"id": "a", "overrides": []}, {"id": "b", "overrides": ["selftrain.tta=true"]}]}
    (tmp_path / "dev.yaml").write_text(yaml.safe_dump(body))
    (tmp_path / "out").mkdir()
    text = "\n".join(study_section(StudyFile.load(tmp_path / "dev.yaml"), tmp_path / "out", tmp_path / "results"))
    assert "0.123" not in text and "test mIoU" not in text and "0.685" in text  # b's mean val clicks


def test_the_compute_table_reads_seed_0_runs_only():
    """Seed 1 of the held-out study was paused for benchmarks: its wall-clock minutes are no method's cost."""
    from analysis.results import load_records
    from analysis.summary import HELDOUT, compute_rows

    recs = load_records(HELDOUT, "results")
    teacher0 = [r["final"]["train/seconds"] / 60 for r in recs if r["cell"].endswith("-teacher") and r["seed"] == 0]
    line = next(ln for ln in compute_rows(Path("results")) if ln.startswith("| the make-best teacher"))
    assert line.endswith(f"| {np.mean(teacher0):.1f} ({len(teacher0)}) |")


def test_the_predict_parts_bench_times_each_variant_once_running(tmp_path):
    from pointseg.bench import predict_parts

    out = tmp_path / "parts.json"
    assert predict_parts.main(["--sizes", "300", "--threads", "1", "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["fold"], r["halo"]) for r in rows] == [(False, 64), (True, 64), (True, 32)]
    assert all(r["seconds"] > 0 and r["mpx"] == pytest.approx(0.09) for r in rows)
    assert "| 0 | 1 | folded, halo 32 |" in predict_parts.markdown_table(rows)
