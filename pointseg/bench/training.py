"""`make bench`: speed, measured in one run with both sides taking turns, printed as tables (runs/bench.json).

1. Loss: partial focal CE forward+backward ÷ ``F.cross_entropy`` on the same tensors (goal ≤ 1.1).
2. Step cost per change: one train step of the default model, each variant against the plain NCHW eager step
   (channels_last, and the batch sizes a schedule could use), alternating call by call.
3. The default run (``experiments/full.yaml``, seed 0, the quick schedule) against a bare smp + CE loop: after
   every epoch of the run, a block of bare steps (batch 16, the issue's loop); the run's whole wall time (data, train,
   val, test) ÷ the time of 1200 bare steps (goal ≤ 0.66), its test mIoU on tile 8 (goal ≥ 0.64; also recomputed
   from its best.pt by `pointseg evaluate`, outside the timed fit), and the time it
   took to reach 0.99 of the converged val mIoU (the longest budget of the convergence study, from results/).

    python -m pointseg.bench.training [--parts loss steps reference] [--bare-steps 20] [--config experiments/full.yaml]

``--config`` times another schedule's run against the same bare loop; its rows are kept beside the default's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pointseg.batchnorm import use_reduction_batchnorm
from pointseg.config import load_config
from pointseg.export import cpu_model
from pointseg.io import write_json
from pointseg.losses import partial_focal_ce
from pointseg.models import build_model, frozen_parameter_names, set_encoder_trainable

from .table import markdown_table
from .timing import alternating

REFERENCE_BARE_STEPS = 1200  # what the pre-change converged run took: 1200 steps of today's loop
REFERENCE_BARE_BATCH = 16  # ... at its batch size (the bare loop: batch 16, 128² crops), whatever ours is
BAR_TILE = "8"  # the speed bar's test tile
DEFAULT_CONFIG = "experiments/full.yaml"  # the default full-mask run; --config times another beside it (the
# studies' reference schedule: experiments/full-reference.yaml)


def loss_rows(repeats: int = 200) -> list[dict]:
    rows = []
    for labelled, gamma in ((0.01, 2.0), (0.01, 0.0), (1.0, 2.0), (1.0, 1.0), (1.0, 0.5)):
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(16, 5, 128, 128, generator=g, requires_grad=True)
        target = torch.randint(0, 5, (16, 128, 128), generator=g)
        target[torch.rand(16, 128, 128, generator=g) > labelled] = 255

        def ce():
            logits.grad = None
            F.cross_entropy(logits, target, ignore_index=255).backward()

        def pfce():
            logits.grad = None
            partial_focal_ce(logits, target, gamma=gamma, compiled=True).backward()

        t = alternating({"ce": ce, "pfce": pfce}, repeats, warmup=3)
        r = t["pfce"] / t["ce"]
        rows.append({"what": f"pfCE γ={gamma} ÷ CE, {labelled:.0%} labelled, 16×5×128×128", "a": t["pfce"] * 1e3,
                     "b": t["ce"] * 1e3, "ratio": r, "goal": "≤ 1.1", "met": r <= 1.1, "unit": "ms"})
    return rows


_FIRST_CALL = """
import sys, time, torch
from pointseg.losses import partial_focal_ce
g = torch.Generator().manual_seed(0)
x = torch.randn(16, 5, 128, 128, generator=g, requires_grad=True)
y = torch.randint(0, 5, (16, 128, 128), generator=g)
t0 = time.perf_counter()
partial_focal_ce(x, y, gamma=2.0, compiled=sys.argv[1] == "1").backward()
print(time.perf_counter() - t0)
"""


def first_call_seconds(compiled: bool) -> float:
    """The dense loss's first call in a fresh process, as a training run pays it (inductor's on-disk cache may
    make the compile a warm one; in a process that has compiled it once, a second compile is nearly free)."""

    out = subprocess.run([sys.executable, "-c", _FIRST_CALL, "1" if compiled else "0"], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def compile_row(repeats: int = 200) -> dict:
    """Does compiling the dense loss pay within a run? The extra cost of its first call against the per-step
    saving over the uncompiled path, as the steps needed to break even."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, 128, 128, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (16, 128, 128), generator=g)
    extra = first_call_seconds(True) - first_call_seconds(False)

    def run(compiled: bool):
        def fn():
            logits.grad = None
            partial_focal_ce(logits, target, gamma=2.0, compiled=compiled).backward()
        return fn

    t = alternating({"eager": run(False), "compiled": run(True)}, repeats, warmup=3)
    saving = t["eager"] - t["compiled"]
    steps = extra / saving if saving > 0 else float("inf")
    ref = load_config(DEFAULT_CONFIG).train
    ref_steps = ref.epochs * ref.steps_per_epoch
    return {"what": f"dense pfCE γ=2 compiled: steps to pay back its first call ({extra:.1f} s more than "
                    f"uncompiled; eager {t['eager'] * 1e3:.2f} ms, compiled {t['compiled'] * 1e3:.2f} ms per call)",
            "a": steps, "b": float(ref_steps), "ratio": steps / ref_steps, "goal": "< 1 to compile in training",
            "met": steps < ref_steps, "unit": "steps"}


def _model():
    cfg = load_config(DEFAULT_CONFIG)
    return build_model(cfg.model.arch, cfg.model.encoder, 5, cfg.model.encoder_weights, cfg.model.decoder_channels)


def _step_fn(batch: int, channels_last: bool, bf16: bool = False, compiled: bool = False, freeze_levels: int = 0,
             reduction_bn: bool = False, fused_adamw: bool = False):
    torch.manual_seed(0)
    model = _model().train()
    set_encoder_trainable(model, True, frozen_parameter_names(model, freeze_levels))  # the trainer's own freeze
    x, y = torch.rand(batch, 3, 128, 128), torch.randint(0, 5, (batch, 128, 128))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if reduction_bn:
        use_reduction_batchnorm(model)  # the trainer's train.reduction_batchnorm
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                            fused=True if fused_adamw else None)  # the trainer's train.fused_adamw
    forward = torch.compile(model) if compiled else model

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # AMX-capable CPUs run bf16 convs natively
            loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


# each variant: the keyword arguments of _step_fn; the compiled variant's warm-up calls pay its compilation, which
# the timed calls do not include
STEP_VARIANTS = {"NCHW bs16": dict(batch=16, channels_last=False),
                 "channels_last bs16": dict(batch=16, channels_last=True),
                 "channels_last bs8": dict(batch=8, channels_last=True),
                 "channels_last bs32": dict(batch=32, channels_last=True),
                 "channels_last bs16 bf16 autocast": dict(batch=16, channels_last=True, bf16=True),
                 "channels_last bs16 torch.compile": dict(batch=16, channels_last=True, compiled=True),
                 "channels_last bs16, 2 encoder levels frozen": dict(batch=16, channels_last=True, freeze_levels=2),
                 "channels_last bs16, BatchNorm ≤ 16 channels by reductions": dict(batch=16, channels_last=True,
                                                                                   reduction_bn=True),
                 "channels_last bs16, fused AdamW": dict(batch=16, channels_last=True, fused_adamw=True),
                 "channels_last bs16, both": dict(batch=16, channels_last=True, reduction_bn=True, fused_adamw=True)}


def step_rows(repeats: int = 12) -> list[dict]:
    """img/s of each variant ÷ the plain NCHW eager step at batch 16 (alternating)."""
    variants = STEP_VARIANTS
    fns = {k: _step_fn(**v) for k, v in variants.items()}
    t = alternating(fns, repeats, warmup=2)
    base = 16 / t["NCHW bs16"]
    img_s = {k: variants[k]["batch"] / t[k] for k in variants}
    return [{"what": f"train step, {k} (img/s, median of {repeats} alternating)", "a": img_s[k], "b": base,
             "ratio": img_s[k] / base, "goal": "> 1 to keep", "met": None, "unit": "img/s"}
            for k in variants if k != "NCHW bs16"]


def converged_val_miou() -> tuple[float | None, str]:
    """Mean final val mIoU of the longest budget of the convergence study, from its exports."""
    runs = []  # (steps, final val mIoU) of each exported run: read as data, the trainer's side needs no analysis
    for path in sorted(Path("results/convergence").glob("*/seed*.json")):
        rec = json.loads(path.read_text())
        t = rec["config"]["train"]
        runs.append((t["epochs"] * t["steps_per_epoch"], rec["final"]["val/miou"]))
    if not runs:
        return None, "no convergence exports"
    longest = max(s for s, _ in runs)
    vals = [v for s, v in runs if s == longest]
    return sum(vals) / len(vals), f"{longest} steps, {len(vals)} seeds"


def reference_rows(bare_steps: int, config: str = DEFAULT_CONFIG) -> list[dict]:
    cfg = load_config(config, ["wandb.mode=disabled", "name=bench", "export_dir=null"])
    bare = _step_fn(REFERENCE_BARE_BATCH, channels_last=False)  # the loop a user writes first: NCHW eager smp + CE
    for _ in range(3):
        bare()
    per_step: list[float] = []

    def bare_block(epoch: int, row: dict) -> None:
        t0 = time.perf_counter()
        for _ in range(bare_steps):
            bare()
        per_step.append((time.perf_counter() - t0) / bare_steps)

    from pointseg.train import fit

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = fit(cfg, run_dir=d, callback=bare_block, progress=False)
        wall = time.perf_counter() - t0 - len(per_step) * bare_steps * statistics.mean(per_step)
        recomputed = recomputed_miou(d, BAR_TILE)  # after the clock: the bar's number, not the trainer's own
    bare_1200 = REFERENCE_BARE_STEPS * statistics.median(per_step)
    own = res.final[f"test/group/{BAR_TILE}/miou"]
    t = cfg.train
    early = f", the first {t.early_crop_steps} on {t.early_crop_size} px crops" if t.early_crop_steps else ""
    steps = f"{t.epochs * t.steps_per_epoch} steps" + early
    rows = [{"what": f"{_label(config)} ({steps}, whole fit) ÷ {REFERENCE_BARE_STEPS} bare NCHW smp+CE steps",
             "a": wall, "b": bare_1200, "ratio": wall / bare_1200, "goal": "≤ 0.66", "met": wall / bare_1200 <= 0.66,
             "unit": "s"},
            {"what": f"{_label(config)}: test mIoU on tile {BAR_TILE} (tiles 5+8 in brackets)", "a": own,
             "b": res.final["test/miou"], "ratio": None, "goal": "≥ 0.64", "met": own >= 0.64, "unit": ""},
            {"what": f"{_label(config)}: tile {BAR_TILE} test mIoU recomputed from best.pt by `pointseg evaluate "
                     f"--groups {BAR_TILE}` (the trainer's own in brackets)", "a": recomputed, "b": own,
             "ratio": None, "goal": "≥ 0.64", "met": recomputed >= 0.64, "unit": ""}]
    target, source = converged_val_miou()
    if target is not None:
        elapsed, reached = 0.0, None
        for row in res.history:
            elapsed += row["train/seconds"] + row.get("val/seconds", 0.0)
            if row.get("val/miou", -1) >= 0.99 * target:
                reached = elapsed
                break
        rows.append({"what": f"{_label(config)}: time to 0.99 × converged val mIoU {target:.3f} ({source})",
                     "a": reached if reached is not None else float("nan"), "b": bare_1200,
                     "ratio": reached / bare_1200 if reached is not None else None, "goal": "—", "met": None,
                     "unit": "s"})
    return rows


def recomputed_miou(run_dir: str | Path, group: str) -> float:
    """Test mIoU of one test tile from the run's best.pt alone, through the CLI a user runs (`pointseg evaluate`):
    a fresh model, the checkpoint's own config and band statistics, none of the trainer's state."""
    from pointseg.cli import main as cli

    out = Path(run_dir) / f"evaluate-{group}.json"
    if cli(["evaluate", str(Path(run_dir) / "best.pt"), "--split", "test", "--groups", group,
            "--output", str(out)]) != 0:
        raise RuntimeError(f"pointseg evaluate failed on {run_dir}/best.pt")
    return float(json.loads(out.read_text())["test/miou"])


def _label(config: str) -> str:
    return "default run" if config == DEFAULT_CONFIG else f"{Path(config).stem} run"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["loss", "steps", "reference"]
    ap.add_argument("--parts", nargs="+", default=parts, choices=parts)
    ap.add_argument("--bare-steps", type=int, default=20, help="bare steps timed after each epoch of the reference run")
    ap.add_argument("--config", default=DEFAULT_CONFIG, help="the run the reference part times")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows: list[dict] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n", flush=True)
    cpu = cpu_label()  # one machine for the whole run: every row it writes carries it
    for part, fn in (("loss", lambda: loss_rows() + [compile_row()]), ("steps", step_rows),
                     ("reference", lambda: reference_rows(args.bare_steps, args.config))):
        if part in args.parts:
            new = [{**row, "part": part, "cpu": cpu, **({"config": args.config} if part == "reference" else {})}
                   for row in fn()]
            print(markdown_table(new) + "\n", flush=True)
            rows += new
    out = Path("results/bench.json")
    if out.exists():  # a run of some parts keeps the rows of the others (each row says which run made it)
        kept = [r for r in json.loads(out.read_text())["rows"] if _part(r) not in args.parts
                or (_part(r) == "reference" and r.get("config", DEFAULT_CONFIG) != args.config)]
        rows = kept + rows
    write_json(out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows})
    return 0


def cpu_label() -> str:
    """The CPU a row was timed on: rows of different runs sit in one file, and speed is a property of the CPU."""
    return f"{cpu_model() or 'unknown CPU'} ({torch.backends.cpu.get_cpu_capability()})"


def _part(row: dict) -> str:
    """The part a row belongs to (rows written before rows carried it: by their description)."""
    if "part" in row:
        return row["part"]
    what = row["what"]
    return "loss" if what.startswith("pfCE") else "steps" if what.startswith("train step") else "reference"


if __name__ == "__main__":
    raise SystemExit(main())
