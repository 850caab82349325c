"""`make bench`: speed goals, measured in one run, printed as a table (and saved to runs/bench.json).

1. partial focal CE forward+backward ÷ F.cross_entropy forward+backward, same tensors (goal ≤ 1.1);
2. trainer throughput (pointseg.train.fit, real data, its train loop) ÷ a bare smp + CE loop on the same model
   and batch shape (goal ≥ 0.9).
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


def _time(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def loss_ratio(labelled: float, gamma: float, repeats: int = 30) -> tuple[float, float, float]:
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

    # interleave to share any drift of the machine between the two
    t_ce, t_pf = [], []
    for _ in range(3):
        t_ce.append(_time(ce, repeats // 3))
        t_pf.append(_time(pfce, repeats // 3))
    a, b = statistics.median(t_pf), statistics.median(t_ce)
    return a, b, a / b


def throughput(steps: int, epochs: int) -> tuple[float, float, float]:
    cfg = load_config("experiments/points.yaml", [f"train.epochs={epochs}", f"train.steps_per_epoch={steps}",
                                                  "wandb.mode=disabled", "name=bench"])
    with tempfile.TemporaryDirectory() as d:
        trainer = fit(cfg, run_dir=d, progress=False).final["train/img_per_s"]
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
    t0 = time.perf_counter()
    n = steps * epochs
    for _ in range(n):
        step()
    bare = n * b / (time.perf_counter() - t0)
    return trainer, bare, trainer / bare


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    rows = []
    for labelled, gamma in ((0.01, 2.0), (0.01, 0.0), (1.0, 2.0), (1.0, 1.0), (1.0, 0.5)):
        a, b, r = loss_ratio(labelled, gamma)
        rows.append({"what": f"pfCE γ={gamma} ÷ CE, {labelled:.0%} labelled, 16×5×128×128", "a": a * 1e3,
                     "b": b * 1e3, "ratio": r, "goal": "≤ 1.1", "met": r <= 1.1, "unit": "ms"})
    t, bare, r = throughput(args.steps, args.epochs)
    rows.append({"what": f"trainer ÷ bare smp+CE loop (img/s, bs16, 128 px, {args.steps * args.epochs} steps)",
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
