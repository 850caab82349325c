"""Study cells that train nothing: the finished runs of another cell, tested again under test-time settings.

A cell with ``evaluate: <study>/<cell>`` takes that cell's checkpoints (``runs/studies/<study>/<cell>/seed<k>``)
and its exports, tests them with the settings the cell names, and exports a record beside the trained cells, so the
report pairs it with them by seed and test image like any other cell:

    - {id: tta, label: "D4 TTA", evaluate: label-efficiency-crf/crf-10, tta: true}
    - {id: ensemble, label: "ensemble of the 3 seeds", evaluate: label-efficiency-crf/crf-10, ensemble: true}
    - {id: matched, label: "matched per tile", evaluate: label-efficiency-crf/crf-10, match: true}
    - {id: colour, label: "test tiles recoloured", evaluate: label-efficiency-crf/crf-10, shift: colour}

``match``: each test tile's pooled histogram is matched to the training images' style (``HistogramStyle``, scope
group: one look-up table per tile, an acquisition), fitted from the source run's training split; a checkpoint
trained with ``train.histogram_match`` brings its own stored style instead. ``shift``: the test images restyled on
purpose (another sensor or sun), before any matching. ``ensemble``: the mean probability of every seed's model;
seed k's record is that one ensemble, so a paired comparison is the ensemble against each of its members.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from pointseg.config import ConfigError
from pointseg.data.style import HistogramStyle

log = logging.getLogger("pointseg.study")

SETTINGS = ("tta", "match", "shift", "ensemble", "prior")
# prior: the label-shift correction (pointseg/prior.py), its class mix estimated by EM on the source run's
# training images (one mix for every test image) or on each test tile's own images
PRIORS = ("train", "tile")
# per-band gain and offset of each style shift (bands beyond the third keep their values)
SHIFTS = {"bright": ("brightened", (1.35, 1.35, 1.35), (25, 25, 25)),
          "dark": ("darkened", (0.55, 0.55, 0.55), (0, 0, 0)),
          "colour": ("recoloured", (1.25, 1.0, 0.75), (10, 0, -10))}


def is_evaluation(cell) -> bool:
    return "evaluate" in cell.extra


def settings_of(cell) -> dict:
    unknown = sorted(set(cell.extra) - {"evaluate", "reference", *SETTINGS})
    if unknown:
        raise ConfigError(f"evaluation cell {cell.id}: unknown keys {unknown}; it takes {['evaluate', *SETTINGS]}")
    s = {"tta": bool(cell.extra.get("tta", False)), "match": bool(cell.extra.get("match", False)),
         "shift": cell.extra.get("shift"), "ensemble": bool(cell.extra.get("ensemble", False)),
         "prior": cell.extra.get("prior")}
    if s["shift"] is not None and s["shift"] not in SHIFTS:
        raise ConfigError(f"evaluation cell {cell.id}: shift must be one of {list(SHIFTS)}, got {s['shift']!r}")
    if s["prior"] is not None and s["prior"] not in PRIORS:
        raise ConfigError(f"evaluation cell {cell.id}: prior must be one of {list(PRIORS)}, got {s['prior']!r}")
    if s["prior"] and s["ensemble"]:
        raise ConfigError(f"evaluation cell {cell.id}: prior and ensemble together are not supported (each member "
                          "trained on its own labels, so each has its own class mix)")
    return s


def style_shift(image: np.ndarray, kind: str) -> np.ndarray:
    """A test image restyled on purpose: another sensor (colour balance), another sun (brightness)."""
    if kind not in SHIFTS:
        raise ValueError(f"unknown style shift {kind!r}; one of {list(SHIFTS)}")
    _, gain, offset = SHIFTS[kind]
    n = min(3, image.shape[-1])
    x = image.astype(np.float32)
    x[..., :n] = x[..., :n] * np.asarray(gain[:n], np.float32) + np.asarray(offset[:n], np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def describe_shift(kind: str) -> str:
    """'recoloured (× 1.25, 1, 0.75 + 10, 0, −10 per band)': the words the report uses for a shift."""
    words, gain, offset = SHIFTS[kind]
    same = len(set(gain)) == 1 and len(set(offset)) == 1
    g = f"{gain[0]:g}" if same else ", ".join(f"{v:g}" for v in gain)
    o = f"{offset[0]:+g}" if same else ", ".join(f"{v:+g}" for v in offset)
    return f"{words} (× {g}" + ("" if not any(offset) else f", then {o}") + ("" if same else " per band") + ")"


def run_evaluation(study, cell, seed: int, out_dir: str = "runs/studies", export_dir: str = "results") -> bool:
    """Test the source cell's run(s) for ``seed`` under the cell's settings and export; False when the source
    is not finished here (logged: train it first), True when exported now or already."""
    from pointseg.export import export_path

    settings = settings_of(cell)
    src = cell.extra["evaluate"]
    seeds = list(study.seeds) if settings["ensemble"] else [seed]
    out = export_path(export_dir, f"{study.name}/{cell.id}", seed)
    if out.exists():
        done = json.loads(out.read_text()).get("evaluation", {})
        if {k: done.get(k) for k in ("of", *SETTINGS)} != {"of": src, **settings}:
            raise ConfigError(f"{out} holds another evaluation ({done}); move it away or name the cell differently")
        log.info("%s seed %d: exported already (%s)", cell.id, seed, out)
        return True
    run_dirs = [Path(out_dir) / src / f"seed{s}" for s in seeds]
    sources = [export_path(export_dir, src, s) for s in seeds]
    missing = [str(p) for p in [*(d / "best.pt" for d in run_dirs), *sources] if not p.exists()]
    if missing:
        log.warning("%s seed %d: skipped, the runs it tests are not finished here (%s); run the cell %s first",
                    cell.id, seed, ", ".join(missing), src)
        return False
    final = _test(run_dirs, settings)
    for s in seeds:  # one ensemble: every member's seed gets its record (else seeds is [seed])
        rec = json.loads(export_path(export_dir, src, s).read_text())
        _export(export_path(export_dir, f"{study.name}/{cell.id}", s), rec, f"{study.name}/{cell.id}", final,
                {"of": src, **settings, "seeds": seeds})
    return True


def _test(run_dirs: list[Path], settings: dict) -> dict:
    from pointseg.checkpoint import load_model
    from pointseg.data.bands import BandNorm
    from pointseg.data.dataset import DatasetSpec
    from pointseg.infer import scene_confusions, split_record
    from pointseg.inputs import load_split

    models, cfg, ckpt = [], None, None
    for d in run_dirs:
        m, c, k = load_model(d)
        models.append(m)
        cfg, ckpt = cfg or c, ckpt or k
    data = ckpt.get("data") or {}
    norm = BandNorm.from_state(data.get("norm"), data.get("in_channels", 3))
    spec = DatasetSpec.load(cfg.data.dataset)
    scenes = load_split(cfg, "test", norm)
    if settings["shift"]:
        scenes = [dataclasses.replace(s, image=style_shift(s.image, settings["shift"])) for s in scenes]
    style = None
    if settings["match"]:
        style = HistogramStyle.from_state(ckpt.get("style")) or HistogramStyle.fit(
            [s.image for s in load_split(cfg, "train", norm)], "group")
    e = cfg.eval
    t0 = time.perf_counter()
    corrections, priors = _prior_shifts(settings["prior"], models, cfg, ckpt, scenes, norm, style)
    dense, _ = scene_confusions(models, scenes, spec.num_classes, e.window, e.overlap, e.batch_size,
                                settings["tta"], "cpu", style, desc="eval test", corrections=corrections)
    return {**split_record(dense, scenes, list(spec.class_names), "test/"), "test/seconds": time.perf_counter() - t0,
            **priors}


def _prior_shifts(kind, models, cfg, ckpt, scenes, norm, style) -> tuple[list | None, dict]:
    """Per test scene, its label-shift correction, and what was fitted for the record (none without ``kind``)."""
    if not kind:
        return None, {}
    from pointseg.infer import predict_probs
    from pointseg.inputs import load_split
    from pointseg.prior import calibrated

    e, names = cfg.eval, list(ckpt["class_names"])
    kw = dict(window=e.window, overlap=e.overlap, batch_size=e.batch_size)
    base = calibrated(models, cfg, ckpt, load_split(cfg, "val", norm), **kw)  # once: the same for every tile

    def shifted(em_scenes, images):
        return base.shifted_to(em_scenes, (predict_probs(models, im, **kw) for im in images))

    if kind == "train":  # the training images as the model saw them in training (unstyled, unshifted)
        train = load_split(cfg, "train", norm)
        shift = shifted(train, [s.image for s in train])
        return [shift] * len(scenes), shift.record(names)
    images = style.restyle(scenes) if style is not None else [s.image for s in scenes]
    corrections, record = [None] * len(scenes), {}
    for group in dict.fromkeys(s.group for s in scenes):
        idx = [i for i, s in enumerate(scenes) if s.group == group]
        shift = shifted([scenes[i] for i in idx], [images[i] for i in idx])
        record.update(shift.record(names, f"prior/target/{group}"))
        for i in idx:
            corrections[i] = shift
    return corrections, record


def _export(path: Path, source: dict, name: str, final: dict, evaluation: dict) -> None:
    from pointseg.export import code_version, machine
    from pointseg.io import write_json

    kept = {k: v for k, v in source["final"].items() if not k.startswith("test/")}  # val curve, train time
    record = {**{k: v for k, v in source.items() if k not in ("samples", "reused_from")},
              "name": name, "config": {**source["config"], "name": name}, "final": {**kept, **final, "name": name},
              "evaluation": {**evaluation, "code": code_version(), "machine": machine("cpu")}}
    write_json(path, record)
    log.info("%s: test mIoU %.4f (%s)", path, final["test/miou"], evaluation)
