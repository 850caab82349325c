"""A study file (experiments/studies/*.yaml) → its runs, seed-major, resumable, each exported when it ends.

    python -m sweeps.cells experiments/studies/convergence.yaml [--seeds 0 1 2] [--cells full-800 ...]

The file holds the question and the hypothesis (written before anything runs), the base config, the cells
(each a list of overrides) and the seeds. Run ``cell`` of study ``s`` at seed ``k`` lives in
``runs/studies/<s>/<cell>/seed<k>`` and exports ``results/<s>/<cell>/seed<k>.json``; a finished run is not
trained again, a killed one resumes from its last epoch. Seed-major order: an interrupted study has every cell at
the first seeds, which is what a paired comparison needs.
"""

from __future__ import annotations

import argparse
import logging

from pointseg.config import MACHINE_KEYS, ConfigError

from .evaluations import is_evaluation, run_evaluation
from .studyfile import Cell, StudyFile, machine_has

log = logging.getLogger("pointseg.study")


def _exported(cell: Cell, seed: int, cfg) -> bool:
    """A run whose export is there (committed, or copied back from another machine) is not trained again; an
    export of another config under this cell's name is an error, never overwritten."""
    from pointseg.export import read_export

    path, rec = read_export(cfg, lambda p, keys: ConfigError(f"{p} holds cell {cell.id} seed {seed} of another "
                                                             f"config ({keys}); move it away or name the cell "
                                                             "differently"))
    if rec is None:
        return False
    log.info("%s seed %d: exported already (%s)", cell.id, seed, path)
    return True


def _reuse(study: StudyFile, cell: Cell, seed: int, cfg) -> bool:
    """A cell may name an identical cell of another study (``reuse: convergence/full-800``): when that study has
    exported this seed with the same config (all but name and output paths), its record is copied, not retrained."""
    src_name = cell.extra.get("reuse")
    if not src_name:
        return False
    from pointseg.export import export_path, read_export
    from pointseg.io import write_json

    src, rec = read_export(cfg, lambda _, keys: ConfigError(f"{study.path}: cell {cell.id} reuses {src_name}, but "
                                                            f"seed {seed} there ran another config ({keys})"),
                           src_name)
    if rec is None:
        return False
    write_json(export_path(cfg.export_dir, cfg.name, seed), {**rec, "reused_from": str(src)})
    log.info("%s seed %d: reused %s", cell.id, seed, src)
    return True


def run_study(study: StudyFile, seeds: list[int] | None = None, cells: list[str] | None = None,
              out_dir: str = "runs/studies", export_dir: str = "results", machine_settings: list[str] = ()) -> None:
    from pointseg.train import fit

    bad = [s for s in machine_settings if not s.split("=", 1)[0].startswith(MACHINE_KEYS)]
    if bad:
        raise ConfigError(f"--set only takes machine settings ({', '.join(MACHINE_KEYS)}), not {bad}: "
                          "a change of what a cell computes belongs in the study file")
    chosen = study.chosen(cells)
    configs = [(s, c, None if is_evaluation(c) else study.config(c, s, out_dir, export_dir, machine_settings))
               for s in (seeds or study.seeds) for c in chosen]
    for seed, cell, cfg in configs:  # every config is checked before the first run starts
        if is_evaluation(cell):  # trains nothing: tests another cell's finished runs again
            run_evaluation(study, cell, seed, out_dir, export_dir)
            continue
        if _exported(cell, seed, cfg) or _reuse(study, cell, seed, cfg):
            continue
        if not machine_has(cell):
            log.info("%s seed %d: skipped, it is a cell for a %s machine", cell.id, seed, cell.extra["machine"])
            continue
        log.info("%s seed %d: %s", cell.id, seed, " ".join(cell.overrides))
        res = fit(cfg)
        print(done_line(study, cell.id, seed, res.final), flush=True)


def done_line(study: StudyFile, cell: str, seed: int, final: dict) -> str:
    """What a finished run prints: the study's metric and test mIoU, or, in a development study (which chooses on
    its val metric), the metric alone: its export holds test numbers, unread."""
    line = f"{study.name}/{cell} seed {seed}: {study.metric} {final.get(study.metric, float('nan')):.4f}"
    if not study.development and study.metric != "test/miou":
        line += f"  test mIoU {final['test/miou']:.4f}"
    return line


def main(argv=None) -> int:
    from pointseg.progress import setup_logging

    setup_logging(fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="experiments/studies/<name>.yaml")
    ap.add_argument("--seeds", nargs="+", type=int, help="default: the study's seeds")
    ap.add_argument("--cells", nargs="+", help="only these cell ids")
    ap.add_argument("--out-dir", default="runs/studies")
    ap.add_argument("--export-dir", default="results")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="machine settings for every run (wandb.mode=disabled train.device=cuda ...)")
    args = ap.parse_args(argv)
    run_study(StudyFile.load(args.study), args.seeds, args.cells, args.out_dir, args.export_dir, args.set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
