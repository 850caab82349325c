"""Runs trained more than once: two exports whose configs compute the same run (``run_identity``: the same
settings and seed, whatever their names, folders or machine settings), each trained where it ran.

A paired comparison assumes that a seed fixes a run. It fixes the clicks, the initial weights and the order of the
crops, but not the rounding of float sums, which changes with the thread count, the device and the code version; a
long schedule amplifies that into a different model. These pairs measure how far apart two trainings of "the same
run" land, which is the smallest paired difference worth reading. Copies (``reused_from``) and test-time
evaluations of another run are not trainings and are left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .results import machine_label, method_label, paired_on_shared_seeds, shared_seeds
from .stats import interval

METRIC = "test/miou"
# exports of runs whose weights were lost and that were trained again (a study needed them): the study reads the
# new one, and the old one stays here, at results/superseded/<study>/<cell>/seed<k>.json, as a rerun
SUPERSEDED = "superseded"


def where(record: dict[str, Any]) -> str:
    """Machine in words, with the thread count on a CPU (it changes float sums, hence the run)."""
    label = machine_label(record)
    if label != "CPU":
        return label
    m = record.get("machine") or {}
    threads = m.get("threads")
    label += f" ({m['cpu_capability']})" if m.get("cpu_capability") else ""
    return f"{label}, {threads} thread{'s' if threads != 1 else ''}" if threads else f"{label}, threads not recorded"


def trainings(root: Path) -> list[dict[str, Any]]:
    """Every export under ``root`` that is a training of its own (no copy, no evaluation of another run)."""
    out = []
    for path in sorted(Path(root).glob("*/*/seed*.json")) + sorted(Path(root).glob(f"{SUPERSEDED}/*/*/seed*.json")):
        rec = json.loads(path.read_text())
        if rec.get("reused_from") or rec.get("evaluation") or "config" not in rec or METRIC not in rec.get("final", {}):
            continue
        rec["cell"] = path.parent.relative_to(root).as_posix()
        out.append(rec)
    return out


def rerun_groups(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Groups of ≥ 2 trainings of one run (same identity, seed included), each group in storage order."""
    from pointseg.config import load_config, run_identity

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        key = json.dumps(run_identity(load_config(None, rec["config"])), sort_keys=True, default=str)
        groups[key].append(rec)
    return [g for g in groups.values() if len(g) > 1]


def _what(config: dict[str, Any]) -> str:
    steps = config["train"]["epochs"] * config["train"]["steps_per_epoch"]
    clicks = "" if config["points"]["supervision"] == "full" else f", {config['points']['n_per_class']} clicks/class"
    return f"{method_label(config)}{clicks}, {steps} steps"


def reruns_section(root: Path) -> list[str]:
    records = trainings(root)
    groups = rerun_groups(records)
    if not groups:
        return []
    md = ["## Reruns: the same run trained twice", "",
          "Exports whose configs and seeds are identical (every setting that changes what a run computes), trained "
          "in different studies. A seed fixes the clicks, the initial weights and the crop order; it does not fix "
          "the rounding of float sums, which changes with the thread count, the device and the code version, and "
          "a long schedule amplifies it. How far such pairs land apart is the smallest paired difference worth "
          "reading.", "",
          "| run | seed | one training (where, code) | test mIoU | another training (where, code) | test mIoU | "
          "one − another |", "|---|---|---|---|---|---|---|"]
    diffs = []
    for g in sorted(groups, key=lambda g: (_what(g[0]["config"]), g[0]["seed"])):
        a = g[0]
        for b in g[1:]:
            d = a["final"][METRIC] - b["final"][METRIC]
            diffs.append(d)
            md.append(f"| {_what(a['config'])} | {a['seed']} | `{a['cell']}` ({where(a)}, "
                      f"{_commit(a)}) | {a['final'][METRIC]:.3f} | `{b['cell']}` ({where(b)}, "
                      f"{_commit(b)}) | {b['final'][METRIC]:.3f} | {d:+.3f} |")
    absd = np.abs(diffs)
    md += ["", f"{len(diffs)} pairs: the test mIoU of two trainings of the same run differs by {absd.mean():.3f} "
           f"on average (largest {absd.max():.3f}; {int((absd == 0).sum())} of {len(diffs)} identical), against "
           f"{_seed_spread(records, groups):.3f} between two seeds of one of these cells (mean over their pairs of "
           "seeds). The tests check that a run repeated with the same thread count and code reproduces its numbers "
           "exactly.", ""]
    return md + _same_cells_compared(records, groups)


def _same_cells_compared(records: list[dict[str, Any]], groups: list[list[dict[str, Any]]]) -> list[str]:
    """Two cells that hold the same runs, compared the way a study compares two cells (paired bootstrap over their
    shared seeds and the test images): a check of the intervals, whose true difference is zero."""
    pairs: list[tuple[str, str]] = []
    for g in groups:
        pairs += [(g[0]["cell"], b["cell"]) for b in g[1:] if (g[0]["cell"], b["cell"]) not in pairs]
    rows = []
    for a, b in pairs:
        seeds = shared_seeds(records, a, b)
        if len(seeds) >= 2:
            p = paired_on_shared_seeds(records, a, b, "diff")
            rows.append(f"| `{a}` | `{b}` | {', '.join(map(str, seeds))} | "
                        f"{interval(p.estimate, p.lower, p.upper, signed=True)} | "
                        f"{'yes' if p.lower <= 0 <= p.upper else '**no**'} |")
    if not rows:
        return []
    inside = sum(r.endswith("| yes |") for r in rows)
    return ["The same cells compared as a study compares two cells (paired bootstrap over their shared seeds and "
            "the test images, 95 %): their true difference is zero, so each interval should hold zero.", "",
            "| one cell | another cell | seeds | one − another, test mIoU [95 %] | holds zero |",
            "|---|---|---|---|---|",
            *rows, "", f"{inside} of {len(rows)} intervals hold zero.", ""]


def _seed_spread(records: list[dict[str, Any]], groups: list[list[dict[str, Any]]]) -> float:
    """Mean |difference| of the metric between two seeds of one cell, over the pairs of seeds of every cell that
    holds a rerun: what a rerun's difference is compared with."""
    cells = {r["cell"] for g in groups for r in g}
    diffs = []
    for cell in sorted(cells):
        values = [r["final"][METRIC] for r in records if r["cell"] == cell]
        diffs += [abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]]
    return float(np.mean(diffs))


def _commit(record: dict[str, Any]) -> str:
    commit = (record.get("code") or {}).get("commit")
    return f"`{commit[:7]}`" if commit else "code version not recorded"
