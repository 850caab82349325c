"""Several studies' runs side by side: a queue of (study, cell, seed) over parallel lanes, with a deadline.

    python -m analysis.queue --lanes 8 --deadline-min 9 --set wandb.mode=disabled -- \\
        experiments/studies/label-efficiency.yaml experiments/studies/crf-weight.yaml:crf-0.3,crf-0.03

One run is too small to fill a GPU (or a many-core machine), so each lane is its own process
(``python -m analysis.study FILE --cells CELL --seeds SEED``): a lane that fails stops only its run. Tasks start in
the order given (the files, then seed-major in each, as ``analysis.study`` does), so a study that is cut short has
whole seeds. Runs whose export exists are skipped before any process starts, and what ``reuse:`` cells take from
other studies' exports is copied first, in this process. A self-training cell whose teacher is a cell of the same
queue starts only once its teacher has finished (and not at all if it failed), and a teacher only when its student
fits after it before the deadline. No run starts that would end after
the deadline by the median of the finished ones; at the deadline the lanes still running are stopped (each resumes
from its last epoch next time) and the queue says what did not run.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pointseg.config import ConfigError
from pointseg.export import export_path

from .study import StudyFile, machine_has

log = logging.getLogger("pointseg.queue")


@dataclass(frozen=True)
class Task:
    study_file: str
    study: str
    cell: str
    seed: int
    after: str = ""  # a task that must have finished first (a student's teacher in the same queue), by name

    def command(self, machine_settings: list[str], export_dir: str) -> list[str]:
        cmd = [sys.executable, "-m", "analysis.study", self.study_file, "--cells", self.cell, "--seeds",
               str(self.seed), "--export-dir", export_dir]
        return cmd + (["--set", *machine_settings] if machine_settings else [])

    def __str__(self) -> str:
        return f"{self.study}/{self.cell} seed {self.seed}"


def _runs(specs: list[str]):
    """(study file, study, cell, seed) of every run that ``FILE`` or ``FILE:cell,cell`` names, in order (the files,
    then seed-major in each); an unknown cell is an error."""
    for spec in specs:
        spec, _, seeds = spec.partition("@")
        path, _, wanted = spec.partition(":")
        study = StudyFile.load(path)
        chosen = study.chosen(wanted.split(",") if wanted else None)
        for seed in _seeds(study, seeds, path):
            for cell in chosen:
                yield path, study, cell, seed


def _seeds(study: StudyFile, wanted: str, path: str) -> list[int]:
    """The study's seeds, or those of ``@0,1`` (each one the study has: a seed outside it is an error)."""
    if not wanted:
        return list(study.seeds)
    seeds = [int(s) for s in wanted.split(",")]
    unknown = sorted(set(seeds) - set(study.seeds))
    if unknown:
        raise ConfigError(f"{path}: seeds {unknown} are not among the study's seeds {list(study.seeds)}")
    return seeds


def tasks(specs: list[str], export_dir: str = "results") -> list[Task]:
    """``FILE``, ``FILE:cell,cell`` or ``FILE:cell,cell@seed,seed`` → the runs not exported yet, in order (the specs,
    then seed-major in each)."""
    out = []
    for path, study, cell, seed in _runs(specs):
        if not machine_has(cell):  # another machine's cell
            continue
        if cell.extra.get("reuse") and export_path(export_dir, cell.extra["reuse"], seed).exists():
            continue  # analysis.study copies it; a seed the reused study lacks is trained like any other
        if not export_path(export_dir, f"{study.name}/{cell.id}", seed).exists():
            out.append(Task(path, study.name, cell.id, seed, _teacher_of(study, cell, seed)))
    queued = {str(t) for t in out}
    kept = []
    for t in out:
        if t.after and t.after not in queued and not _teacher_weights(t).exists():
            log.warning("%s: not queued: its teacher %s is exported but its weights (%s) are not on this machine; "
                        "move the teacher's export away to train both again", t, t.after, _teacher_weights(t))
            continue
        kept.append(t if t.after in queued else Task(t.study_file, t.study, t.cell, t.seed))
    return kept


def _teacher_weights(t: Task) -> Path:
    study = StudyFile.load(t.study_file)
    cfg = study.config(next(c for c in study.cells if c.id == t.cell), t.seed)
    return Path(cfg.selftrain.teacher.replace("{seed}", str(t.seed))) / "best.pt"


def _teacher_of(study: StudyFile, cell, seed: int) -> str:
    """The task a self-training cell learns from when its teacher is a cell of the same study (its run directory
    ``<out>/<study>/<cell>/seed<k>``), by name; "" otherwise."""
    teacher = study.config(cell, seed).selftrain.teacher
    if not teacher:
        return ""
    parts = Path(teacher.replace("{seed}", str(seed))).parts
    if len(parts) >= 3 and parts[-3] == study.name and parts[-1] == f"seed{seed}":
        return f"{study.name}/{parts[-2]} seed {seed}"
    return ""


def copy_reused(specs: list[str], export_dir: str = "results") -> list[str]:
    """Copy, in this process, every seed that a ``reuse:`` cell takes from another study's export (checked key by
    key, as ``analysis.study`` does; a differing config is an error): a copy takes no lane and no time, and after
    the queue each study has all its runs. Returns what was copied."""
    from .study import _reuse

    copied = []
    for _, study, cell, seed in _runs(specs):
        if not cell.extra.get("reuse") or export_path(export_dir, f"{study.name}/{cell.id}", seed).exists():
            continue
        if _reuse(study, cell, seed, study.config(cell, seed, export_dir=export_dir)):  # False: the source lacks it
            copied.append(f"{study.name}/{cell.id} seed {seed}")
    return copied


def run_queue(todo: list[Task], lanes: int, deadline_s: float, machine_settings: list[str] | None = None,
              export_dir: str = "results", log_dir: str | Path = "runs/queue", expect_s: float = 600.0,
              poll_s: float = 2.0) -> dict[str, list[str]]:
    """Run ``todo`` over ``lanes`` processes until done or ``deadline_s`` from now: {"done", "failed", "stopped",
    "not started"} → task names."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    start, pending, running = time.monotonic(), list(todo), {}
    report: dict[str, list[str]] = {"done": [], "failed": [], "stopped": [], "not started": []}
    took: list[float] = []
    while pending or running:
        now = time.monotonic() - start
        for task, (proc, t0, fh) in list(running.items()):
            if proc.poll() is None:
                continue
            fh.close()
            del running[task]
            took.append(now - t0)
            report["done" if proc.returncode == 0 else "failed"].append(str(task))
            log.info("%s: %s after %.0f s (%d left)", task, "done" if proc.returncode == 0 else
                     f"FAILED (exit {proc.returncode}, see its log)", now - t0, len(pending) + len(running))
        expected = statistics.median(took) if took else expect_s
        for task in [t for t in pending if t.after in report["failed"]]:  # its teacher failed: nothing to learn from
            pending.remove(task)
            report["not started"].append(str(task))
            log.info("%s: not started, its teacher %s failed", task, task.after)
        while pending and len(running) < lanes and now + expected <= deadline_s:
            # the first task whose teacher (if any in this queue) has finished: a student never starts beside it;
            # a teacher starts only when its student fits after it too (a teacher's weights do not outlive the
            # session's run directories, so a student left for later would need its teacher trained again)
            students = {t.after for t in pending}
            task = next((t for t in pending if (not t.after or t.after in report["done"])
                         and (str(t) not in students or now + 2 * expected <= deadline_s)), None)
            if task is None:
                break
            pending.remove(task)
            name = f"{task.study}-{task.cell}-seed{task.seed}".replace("/", "_")
            fh = open(log_dir / f"{name}.log", "w")
            proc = subprocess.Popen(task.command(machine_settings or [], export_dir), stdout=fh,
                                    stderr=subprocess.STDOUT)
            running[task] = (proc, now, fh)
            log.info("%s: started (lane %d of %d)", task, len(running), lanes)
        if pending and not running:
            break  # nothing running, and nothing more fits before the deadline or may start
        if now >= deadline_s:
            for task, (proc, _, fh) in running.items():
                proc.terminate()
                proc.wait()
                fh.close()
                report["stopped"].append(str(task))
            running = {}
            break
        time.sleep(poll_s)
    report["not started"] += [str(t) for t in pending]
    return report


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+", help="study files, each optionally FILE:cell,cell and @seed,seed")
    ap.add_argument("--lanes", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--deadline-min", type=float, default=float("inf"), help="start nothing that ends later")
    ap.add_argument("--expect-min", type=float, default=10.0, help="a run's time until one has finished")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="machine settings, as analysis.study")
    ap.add_argument("--export-dir", default="results")
    ap.add_argument("--log-dir", default="runs/queue")
    args = ap.parse_args(argv)
    copied = copy_reused(args.specs, args.export_dir)
    if copied:
        log.info("copied %d reused runs from other studies' exports", len(copied))
    todo = tasks(args.specs, args.export_dir)
    log.info("%d runs to do over %d lanes", len(todo), args.lanes)
    report = run_queue(todo, args.lanes, args.deadline_min * 60, args.set, args.export_dir, args.log_dir,
                       args.expect_min * 60)
    for key, names in report.items():
        print(f"{key}: {len(names)}" + "".join(f"\n  {n}" for n in names), flush=True)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
