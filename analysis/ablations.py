"""Measure each framework feature against the same run without it: paired (same seeds, same points), test split.

    python -m analysis.ablations [--parts tta ensemble style pretrained semi semi_long] [--seeds 0 1 2]
    python -m analysis.ablations --parts costs     # on an otherwise idle machine, then the line above again

Training runs go through the one trainer into runs/ablations/ (resumable); evaluations are cached as JSON, so a
killed batch continues where it stopped. The table (feature → test mIoU with / without, paired gain ± 95 % CI,
cost) is written to runs/ablations/table.json and printed as Markdown.

The cost column comes from ``--parts costs``: every time ratio measured in one process, interleaved, so that
the machine's load is shared by both sides of a ratio. The wall times of the cached runs are not used for it:
on 2 cores, any other job running at the same time distorts them several-fold.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pointseg.checkpoint import checkpoint_path, load_model
from pointseg.config import load_config
from pointseg.data.dataset import DatasetSpec
from pointseg.data.style import HistogramStyle
from pointseg.infer import evaluate
from pointseg.io import write_json
from pointseg.train import fit, load_split

from .evaluations import style_shift
from .stats import fmt, mean_ci
from .timing import alternating

OUT = Path("runs/ablations")
BASE = "experiments/points.yaml"
SHORT = ["train.epochs=4", "train.steps_per_epoch=40"]  # the sweeps' schedule, for the many semi runs


def _run(name: str, seed: int, overrides: list[str], out_dir: str = str(OUT)) -> dict:
    cfg = load_config(BASE, [f"name={name}", f"seed={seed}", f"out_dir={out_dir}", *overrides])
    return fit(cfg).final


EXPERIMENTS = Path("runs/studies/label-efficiency")  # `make experiments`: its 10-click and full-mask cells
_CELL = {"points": "points-10", "full": "full"}


def _baseline_dir(seed: int, sup: str = "points") -> Path:
    return EXPERIMENTS / _CELL[sup] / f"seed{seed}"


def eval_cache_key(name: str, run_dirs: list[Path], settings: dict) -> str:
    """``<name>-<sha256 of the checkpoints' bytes and the eval settings>``: a retrained checkpoint or another
    setting (TTA, window, test tiles, a style shift) never returns a stale number cached under the same name."""
    h = hashlib.sha256()
    for d in run_dirs:
        h.update(hashlib.sha256(checkpoint_path(d).read_bytes()).digest())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return f"{name}-{h.hexdigest()[:16]}"


def _eval(name: str, run_dirs: list[Path], tta: bool = False, shift: str | None = None) -> dict:
    """Test metrics of one checkpoint (or an ensemble), cached under runs/ablations/evals/<name>-<digest>.json."""
    models, style, cfg = [], None, None
    for d in run_dirs:
        m, c, ckpt = load_model(d)
        models.append(m)
        cfg = cfg or c
        style = style or HistogramStyle.from_state(ckpt.get("style"))
    e = cfg.eval
    settings = {"tta": tta, "shift": shift, "window": e.window, "overlap": e.overlap, "test": cfg.data.test_groups,
                "scale": cfg.data.scale, "dataset": cfg.data.dataset}
    path = OUT / "evals" / f"{eval_cache_key(name, run_dirs, settings)}.json"
    if path.exists():
        return json.loads(path.read_text())
    spec = DatasetSpec.load(cfg.data.dataset)
    scenes = load_split(cfg, "test")
    if shift:
        scenes = [dataclasses.replace(s, image=style_shift(s.image, shift)) for s in scenes]
    metrics = evaluate(models, scenes, spec.num_classes, list(spec.class_names), "test/", window=cfg.eval.window,
                       overlap=cfg.eval.overlap, batch_size=cfg.eval.batch_size, tta=tta, style=style)
    write_json(path, metrics)
    return metrics


def _row(feature: str, with_: list[float], without: list[float], cost: str, note: str = "") -> dict:
    diff = [a - b for a, b in zip(with_, without)]
    return {"feature": feature, "with": mean_ci(with_), "without": mean_ci(without), "gain": mean_ci(diff),
            "cost": cost, "note": note}


def part_tta(seeds):
    on = [_eval(f"tta-s{s}", [_baseline_dir(s)], tta=True) for s in seeds]
    off = [_eval(f"plain-s{s}", [_baseline_dir(s)]) for s in seeds]
    return [_row("TTA (D4, 8 views)", [m["test/miou"] for m in on], [m["test/miou"] for m in off],
                 _cost("tta", "eval time"))]


def part_ensemble(seeds):
    ens = _eval("ensemble-" + "-".join(map(str, seeds)), [_baseline_dir(s) for s in seeds])
    singles = [_eval(f"plain-s{s}", [_baseline_dir(s)])["test/miou"] for s in seeds]
    m, h, n = mean_ci(singles)
    return [{"feature": f"ensemble of {len(seeds)} seeds", "with": (ens["test/miou"], float("nan"), 1),
             "without": (m, h, n), "gain": (ens["test/miou"] - m, float("nan"), 1),
             "cost": _cost("ensemble", "eval time"),
             "note": "one ensemble vs the mean of its members"}]


def part_style(seeds):
    rows = []
    with_ = [_run("points-histmatch", s, ["train.histogram_match=true"]) for s in seeds]
    base = [json.loads((_baseline_dir(s) / "final.json").read_text()) for s in seeds]
    rows.append(_row("histogram matching", [f["test/miou"] for f in with_], [f["test/miou"] for f in base],
                     _cost("histogram_matching", "eval time") + "; " + _cost("histogram_fit", "+ style fit once:", ratio=False),
                     "tile-wise split: test tile 8 has its own style"))
    for kind in ("bright", "dark", "colour"):
        a = [_eval(f"hist-{kind}-s{s}", [OUT / "points-histmatch" / f"seed{s}"], shift=kind)["test/miou"] for s in seeds]
        b = [_eval(f"plain-{kind}-s{s}", [_baseline_dir(s)], shift=kind)["test/miou"] for s in seeds]
        rows.append(_row(f"histogram matching, test tile {kind}", a, b, "—", "the test tile restyled on purpose"))
    return rows


def part_pretrained(seeds):
    rows = []
    for sup in ("points", "full"):
        base = [json.loads((_baseline_dir(s, sup) / "final.json").read_text()) for s in seeds]
        rand = [_run(f"{sup}-random-init", s, [f"points.supervision={sup}", "model.encoder_weights=none"])
                for s in seeds]
        rows.append(_row(f"ImageNet encoder (offline), {sup}", [f["test/miou"] for f in base],
                         [f["test/miou"] for f in rand], "none (same network)"))
    return rows


SEMI_POINTS = [1, 5, 20]


def _semi_row(n: int, seeds, prefix: str, schedule: list[str], label: str, note: str) -> dict:
    """Paired runs at n points per class without and with the semi-supervised loss (weight 1)."""
    off = [_run(f"{prefix}-off-n{n}", s, [f"points.n_per_class={n}", *schedule]) for s in seeds]
    on = [_run(f"{prefix}-on-n{n}", s, [f"points.n_per_class={n}", "semi.weight=1.0", *schedule]) for s in seeds]
    return _row(f"semi-supervised (FixMatch pseudo-labels), {n} pt/class{label}", [f["test/miou"] for f in on],
                [f["test/miou"] for f in off], _cost("semi", "train step time"), note)


def part_semi(seeds):
    return [_semi_row(n, seeds, "semi", SHORT, "", "short schedule (4×40 steps)") for n in SEMI_POINTS]


COSTS = OUT / "costs.json"


def _cost(key: str, what: str, ratio: bool = True) -> str:
    if not COSTS.exists():
        return "not measured (run --parts costs)"
    v = json.loads(COSTS.read_text())[key]
    return f"{what} × {v:.2f}" if ratio else f"{what} {v:.1f} s"


def part_costs(seeds):
    """Cost ratios of every feature, measured in this one process; the rows of the other parts cite them."""
    import tempfile

    models, cfg = [], None
    for s in seeds:
        m, c, _ = load_model(_baseline_dir(s))
        models.append(m)
        cfg = cfg or c
    spec = DatasetSpec.load(cfg.data.dataset)
    test = load_split(cfg, "test")
    train_images = [sc.image for sc in load_split(cfg, "train")]
    t0 = time.perf_counter()
    style = HistogramStyle.fit(train_images)
    fit_seconds = time.perf_counter() - t0
    kw = dict(window=cfg.eval.window, overlap=cfg.eval.overlap, batch_size=cfg.eval.batch_size, progress=False)
    ev = lambda ms, **extra: lambda: evaluate(ms, test, spec.num_classes, list(spec.class_names), "test/",
                                              **kw, **extra)  # noqa: E731
    t = alternating({"plain": ev(models[:1]), "tta": ev(models[:1], tta=True), "ensemble": ev(models),
                      "histogram_matching": ev(models[:1], style=style)}, repeats=3)
    # training steps with and without the semi-supervised loss (train/seconds counts the train loop only)
    short = ["train.epochs=1", "train.steps_per_epoch=30", "wandb.mode=disabled", "points.n_per_class=5"]
    steps = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as d:
        for r in range(2):
            for k, extra in (("off", []), ("on", ["semi.weight=1.0"])):
                c = load_config(BASE, [f"name={k}{r}", f"out_dir={d}", *short, *extra])
                steps[k].append(fit(c, progress=False).final["train/seconds"])
    costs = {"tta": t["tta"] / t["plain"], "ensemble": t["ensemble"] / t["plain"],
             "histogram_matching": t["histogram_matching"] / t["plain"], "histogram_fit": fit_seconds,
             "semi": float(np.median(steps["on"]) / np.median(steps["off"])),
             "seconds": {**t, "semi_on": steps["on"], "semi_off": steps["off"]},
             "ensemble_members": len(models), "torch_threads": torch.get_num_threads()}
    write_json(COSTS, costs)
    print(json.dumps(costs, indent=1))
    return []


def part_semi_long(seeds):
    """The same comparison at 5 points per class on the default schedule (6 × 50 steps): does time help it?"""
    return [_semi_row(5, seeds, "semi-long", [], ", 6×50 steps", "default schedule")]


PARTS = {"costs": part_costs, "tta": part_tta, "ensemble": part_ensemble, "style": part_style, "pretrained": part_pretrained,
         "semi": part_semi, "semi_long": part_semi_long}


def markdown(rows: list[dict]) -> str:
    lines = ["| feature | test mIoU with | without | paired gain (95 % CI) | significant | cost |",
             "|---|---|---|---|---|---|"]
    def nums(t):  # a JSON round trip turns NaN (no CI for n = 1) into None
        return tuple(float("nan") if v is None else v for v in t)

    for r in rows:
        r = {**r, "with": nums(r["with"]), "without": nums(r["without"]), "gain": nums(r["gain"])}
        g, h, n = r["gain"]
        sig = "—" if not np.isfinite(h) else ("yes" if abs(g) > h else "no")
        lines.append(f"| {r['feature']} | {fmt(*r['with'])} | {fmt(*r['without'])} | {fmt(g, h, n)} | {sig} | "
                     f"{r['cost']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", nargs="+", default=[p for p in PARTS if p != "costs"], choices=list(PARTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--semi-points", nargs="+", type=int, default=SEMI_POINTS, help="points per class for `semi`")
    args = ap.parse_args(argv)
    SEMI_POINTS[:] = args.semi_points
    needs_baseline = {"costs", "tta", "ensemble", "style", "pretrained"} & set(args.parts)
    missing = [str(_baseline_dir(s)) for s in args.seeds if not (_baseline_dir(s) / "final.json").exists()]
    if needs_baseline and missing:  # these parts compare against the experiments' runs, they do not make them
        print(f"error: parts {sorted(needs_baseline)} need the finished baseline runs {missing}; "
              f"run `make experiments SEEDS=\"{' '.join(map(str, args.seeds))}\"` first", file=sys.stderr)
        return 2
    table_path = OUT / "table.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    for part in args.parts:
        rows = PARTS[part](args.seeds)
        if part == "costs":
            continue
        table[part] = rows
        write_json(table_path, table)  # after every part: a killed batch keeps what it measured
        print(markdown([r for p in table.values() for r in p]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
