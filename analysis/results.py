"""Read the committed run exports (results/<study>/<cell>/seed<k>.json) into tables and confusion arrays.

Everything a report says is computed from these files; nothing here trains or reads a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path("results")


def load_records(study: str, root: str | Path = RESULTS) -> list[dict[str, Any]]:
    """Every exported run of ``study`` (a folder under ``root``), sorted by cell and seed."""
    base = Path(root) / study
    recs = []
    for path in sorted(base.glob("*/seed*.json")):
        rec = json.loads(path.read_text())
        rec["cell"] = path.parent.name
        recs.append(rec)
    return sorted(recs, key=lambda r: (r["cell"], r["seed"]))


def method_label(config: dict[str, Any]) -> str:
    """What a run learned from: full masks, clicks alone, or clicks plus an unlabelled-pixel method and its weight."""
    if config["points"]["supervision"] == "full":
        return "full masks"
    semi = config.get("semi") or {}
    names = {"gated_crf": "gated CRF", "fixmatch": "FixMatch", "mean_teacher": "mean teacher"}
    label = (f"pfCE + {names.get(semi['method'], semi['method'])} ({semi['weight']:g})" if semi.get("weight")
             else "pfCE")
    strategy = config["points"].get("strategy", "class_balanced")
    if strategy != "class_balanced":  # where the clicks land changes what was learned from
        label += f", {strategy} clicks"
    st = config.get("selftrain") or {}
    if not st.get("teacher"):
        return label
    return (label + (", self-trained (class-balanced)" if st.get("proportion") else ", self-trained")
            + (", TTA teacher" if st.get("tta") else ""))


def machine_label(record: dict[str, Any]) -> str:
    """Where a run ran, in words. Exports from before the machine was recorded all ran on the 2-core session CPU."""
    m = record.get("machine")
    if not m:
        return "CPU"
    return f"GPU ({m.get('gpu', 'cuda')})" if str(m["device"]).startswith("cuda") else "CPU"


def frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: cell, seed, the scalar final metrics, and the config keys a study varies."""
    rows = []
    for r in records:
        c = r["config"]
        rows.append({"cell": r["cell"], "seed": r["seed"], "commit": (r["code"] or {}).get("commit"),
                     "dirty": (r["code"] or {}).get("dirty"), "machine": machine_label(r),
                     "supervision": c["points"]["supervision"], "n_per_class": c["points"]["n_per_class"],
                     "strategy": c["points"]["strategy"], "gamma": c["loss"]["gamma"],
                     "semi_weight": (c.get("semi") or {}).get("weight", 0.0),
                     "steps": c["train"]["epochs"] * c["train"]["steps_per_epoch"],
                     "lr": c["train"]["lr"], "batch_size": c["train"]["batch_size"],
                     "select": c["eval"]["select"], "method": method_label(c),
                     **{k: v for k, v in r["final"].items() if isinstance(v, (int, float)) or v is None},
                     **confusion_metrics(r["final"]), **last_diagnostics(r)})
    return pd.DataFrame(rows)


def last_diagnostics(record: dict[str, Any]) -> dict[str, float]:
    """``last/diag/<key>``: each training diagnostic (logged against the dense masks, never used) at the last epoch
    that logged it, so a verdict can name what a teacher was doing when training ended."""
    out = {}
    for row in record.get("history") or []:
        out.update({f"last/{k}": v for k, v in row.items() if k.startswith("diag/") and v is not None})
    return out


def confusion_metrics(final: dict[str, Any]) -> dict[str, float]:
    """Per class, from the test confusion matrix (rows true, columns predicted, classes in the order of the
    ``test/iou/<class>`` keys): ``test/share/<class>`` (share of the test pixels predicted as it),
    ``test/true_share/<class>`` (share of the test pixels that are it), ``test/precision/<class>`` and
    ``test/recall/<class>``. A verdict names them like any metric."""
    names = [k.split("/", 2)[2] for k in final if k.startswith("test/iou/")]
    conf = np.asarray(final.get("test/confusion") or [], float)
    if conf.shape != (len(names), len(names)) or conf.sum() == 0:
        return {}
    pred, true, hit = conf.sum(0), conf.sum(1), np.diag(conf)
    out = {}
    for i, name in enumerate(names):
        out[f"test/share/{name}"] = pred[i] / conf.sum()
        out[f"test/true_share/{name}"] = true[i] / conf.sum()
        out[f"test/precision/{name}"] = hit[i] / pred[i] if pred[i] else float("nan")
        out[f"test/recall/{name}"] = hit[i] / true[i] if true[i] else float("nan")
    return out


def histories(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"cell": r["cell"], "seed": r["seed"], **row} for r in records for row in r["history"]])


def confusions(records: list[dict[str, Any]], cell: str, seeds: list[int] | None = None) -> np.ndarray:
    """seeds × test images × C × C for one cell (images in name order, the same for every seed)."""
    chosen = [r for r in records if r["cell"] == cell and (seeds is None or r["seed"] in seeds)]
    chosen.sort(key=lambda r: r["seed"])
    if not chosen:
        raise KeyError(f"no exported run of cell {cell!r}")
    names = sorted(chosen[0]["final"]["test/per_image_confusion"])
    out = []
    for r in chosen:
        per = r["final"]["test/per_image_confusion"]
        if sorted(per) != names:
            raise ValueError(f"cell {cell}: seed {r['seed']} was tested on other images than seed {chosen[0]['seed']}")
        out.append([per[n] for n in names])
    return np.asarray(out, float)


def seeds_of(records: list[dict[str, Any]], cell: str) -> list[int]:
    return sorted(r["seed"] for r in records if r["cell"] == cell)


def shared_seeds(records: list[dict[str, Any]], a: str, b: str) -> list[int]:
    """The seeds that cells ``a`` and ``b`` both have exports of: what a paired comparison of them rests on."""
    return sorted(set(seeds_of(records, a)) & set(seeds_of(records, b)))


def paired_on_shared_seeds(records: list[dict[str, Any]], a: str, b: str, how: str, n_boot: int = 2000):
    """Cell ``a`` against cell ``b`` (``ratio`` or ``diff`` of test mIoU) on the seeds both have, with the paired
    bootstrap of :func:`analysis.stats.bootstrap_paired`; None when no seed has exports of both."""
    from .stats import bootstrap_paired

    both = shared_seeds(records, a, b)
    if not both:
        return None
    return bootstrap_paired(confusions(records, a, both), confusions(records, b, both), n_boot, how=how)
