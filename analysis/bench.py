"""`make bench`: speed goals, measured in one run, printed as a table (and saved to runs/bench.json).

1. partial focal CE forward+backward ÷ F.cross_entropy forward+backward, same tensors (goal ≤ 1.1);
2. trainer throughput (pointseg.train.fit, real data, its train loop) ÷ a bare smp + CE loop on the same model
   and batch shape (goal ≥ 0.9).
Both sides of each ratio take turns (call by call for the loss, epoch by epoch for the trainer).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from pointseg.config import load_config
from pointseg.io import write_json
from pointseg.losses import partial_focal_ce
from pointseg.models import build_model
from pointseg.train import fit

from .timing import alternating


def loss_ratio(labelled: float, gamma: float, repeats: int = 60) -> tuple[float, float, float]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, 128, 128, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (16, 128, 128), generator=g)
    target[torch.rand(16, 128, 128, generator=g) > labelled] = 255

    def ce():
        logits.grad = None
        F.cross_entropy(logits, target, ignore_index=255).backward()

    def pfce():
        logits.grad = None
        partial_focal_ce(logits, target, gamma=gamma).backward()

    t = alternating({"ce": ce, "pfce": pfce}, repeats, warmup=3)
    return t["pfce"], t["ce"], t["pfce"] / t["ce"]


def throughput(steps: int, epochs: int) -> tuple[float, float, float]:
    """Trainer img/s ÷ bare-loop img/s, the bare loop running a block of the same length after every epoch."""
    cfg = load_config("experiments/points.yaml", [f"train.epochs={epochs}", f"train.steps_per_epoch={steps}",
                                                  "wandb.mode=disabled", "name=bench"])
    # the same model (same weights) on a real batch of the same sampler, with torch's plain CE loss
    from pointseg.data.crops import CropSampler
    from pointseg.train import load_split, make_targets

    scenes = load_split(cfg, "train")
    targets, _ = make_targets(cfg, scenes)
    x, y = next(CropSampler([s.image for s in scenes], targets, cfg.train.crop_size, cfg.train.batch_size,
                            cfg.seed).batches())
    model = build_model(cfg.model.arch, cfg.model.encoder, 5, cfg.model.encoder_weights, cfg.model.decoder_channels)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    b = cfg.train.batch_size
    model.train()

    def step():
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    bare: list[float] = []

    def bare_block(epoch: int, row: dict) -> None:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        bare.append(steps * b / (time.perf_counter() - t0))

    with tempfile.TemporaryDirectory() as d:
        history = fit(cfg, run_dir=d, callback=bare_block, progress=False).history
    trainer = [r["train/img_per_s"] for r in history]
    ratios = [a / c for a, c in zip(trainer, bare)]
    return statistics.median(trainer), statistics.median(bare), statistics.median(ratios)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for labelled, gamma in ((0.01, 2.0), (0.01, 0.0), (1.0, 2.0), (1.0, 1.0), (1.0, 0.5)):
        a, b, r = loss_ratio(labelled, gamma)
        rows.append({"what": f"pfCE γ={gamma} ÷ CE, {labelled:.0%} labelled, 16×5×128×128", "a": a * 1e3,
                     "b": b * 1e3, "ratio": r, "goal": "≤ 1.1", "met": r <= 1.1, "unit": "ms"})
    t, bare, r = throughput(args.steps, args.epochs)
    rows.append({"what": f"trainer ÷ bare smp+CE loop (img/s, bs16, 128 px, median of {args.epochs} alternating "
                         f"blocks of {args.steps} steps)",
                 "a": t, "b": bare, "ratio": r, "goal": "≥ 0.9", "met": r >= 0.9, "unit": "img/s"})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| measurement | ours | reference | ratio | goal | met |\n|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['what']} | {x['a']:.2f} {x['unit']} | {x['b']:.2f} {x['unit']} | {x['ratio']:.3f} | "
              f"{x['goal']} | {'yes' if x['met'] else 'no'} |")
    write_json("runs/bench.json", {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
