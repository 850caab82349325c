"""Train-step and inference speed of candidate default models on this machine (2 threads).

    python -m pointseg.bench.model_speed > report/model_speed.txt
"""
import time

import torch

from pointseg.losses import partial_focal_ce
from pointseg.models import build_model

CANDIDATES = [("unet", "resnet18", "none", [128, 64, 32, 16, 8]), ("fpn", "resnet18", "none", None),
              ("unet", "tu-tf_efficientnet_lite0", "imagenet-offline", [128, 64, 32, 16, 8]),
              ("fpn", "tu-tf_efficientnet_lite0", "imagenet-offline", None),
              ("unet", "tu-tf_efficientnet_lite0", "imagenet-offline", [64, 48, 32, 16, 8])]


def train_images_per_s(m: torch.nn.Module) -> float:
    """Images per second of a train step (16 crops of 128 px), timed over 5 steps after 3 warm-up steps."""
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x, y = torch.rand(16, 3, 128, 128), torch.randint(0, 5, (16, 128, 128))
    for i in range(8):
        if i == 3:
            t = time.perf_counter()
        loss = partial_focal_ce(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return 16 / ((time.perf_counter() - t) / 5)


def infer_mpx_per_s(m: torch.nn.Module) -> float:
    """Megapixels per second of inference on one 512 px window, timed over 2 calls after one warm-up."""
    m.eval()
    with torch.inference_mode():
        xe = torch.rand(1, 3, 512, 512)
        m(xe)
        t = time.perf_counter()
        m(xe)
        m(xe)
    return 0.262 / ((time.perf_counter() - t) / 2)


if __name__ == "__main__":
    torch.set_num_threads(2)
    for arch, enc, w, dec in CANDIDATES:
        m = build_model(arch, enc, 5, w, dec)
        print(f"{arch:6s} {enc:26s} {str(dec):22s} {train_images_per_s(m):6.1f} img/s train@128   infer "
              f"{infer_mpx_per_s(m):5.2f} Mpx/s", flush=True)
