"""The report's figures are readable: no tick labels or panel titles drawn over each other, and no word cut in two
by the wrapping (checked on the committed exports, where the long labels are)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from analysis import figures, summary  # noqa: E402
from analysis.results import load_records  # noqa: E402
from sweeps.cells import StudyFile  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


def _overlaps(texts) -> list[tuple[str, str]]:
    shown = [t for t in texts if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent()) for t in shown]
    return [(a, b) for (a, ba), (b, bb) in combinations(boxes, 2) if ba.overlaps(bb)]


def problems(fig) -> list[str]:
    """Overlapping tick labels on any axis, and overlapping titles of the panels of one figure."""
    fig.canvas.draw()
    out = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            out += [f"ticks {a!r} / {b!r}" for a, b in _overlaps(axis.get_ticklabels())]
    out += [f"titles {a!r} / {b!r}" for a, b in _overlaps([ax.title for ax in fig.axes])]
    return out


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report's functions draw, kept open instead of saved."""
    kept = []

    def keep(fig, out, name):
        kept.append(fig)
        return name

    monkeypatch.setattr(figures, "_save", keep)
    monkeypatch.setattr(summary, "_save", keep)
    yield kept
    plt.close("all")


def _study(name):
    return StudyFile.load(ROOT / "experiments" / "studies" / f"{name}.yaml"), load_records(name, ROOT / "results")


@pytest.mark.parametrize("name, draw", [("best-seeds", "cells_figure"), ("quick-schedule", "cells_figure"),
                                        ("label-efficiency", "confusion_figure"),
                                        ("self-training-mixed", "qualitative_figure"),
                                        ("teachers", "diagnostics_figure")])
def test_report_figures_have_no_overlapping_labels_and_no_cut_words(name, draw, drawn, tmp_path):
    study, recs = _study(name)
    if not recs:
        pytest.skip(f"no exports of {name}")
    getattr(figures, draw)(study, recs, tmp_path)
    assert drawn and problems(drawn[-1]) == []
    if draw == "cells_figure":  # every piece of a wrapped cell label is a whole word of that label
        words = {w for c in study.cells for w in c.label.split()}
        for t in drawn[-1].axes[0].get_xticklabels():
            assert set(t.get_text().split()) <= words, t.get_text()


def test_the_ladder_figure_keeps_its_labels_apart(drawn):
    dev = summary.ladder_rows(ROOT / "results")
    if not dev:
        pytest.skip("no exports of the ladder's studies")
    summary.ladder_figure(dev, [], Path("."))
    assert problems(drawn[-1]) == []


def test_the_overlap_check_finds_labels_drawn_over_each_other():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(4), ["a long label"] * 4)
    assert problems(fig)
    plt.close(fig)


def test_wrapping_never_cuts_a_word():
    assert figures.wrap("20 clicks (experiments/best-teacher.yaml)", 16).split("\n") == [
        "20 clicks", "(experiments/best-teacher.yaml)"]
