"""Train-step and inference speed of candidate default models on this machine (2 threads).

    python -m analysis.model_speed > report/model_speed.txt
"""
import time, torch
from pointseg.models import build_model
from pointseg.losses import partial_focal_ce
torch.set_num_threads(2)
for arch, enc, w, dec in [("unet","resnet18","none",[128,64,32,16,8]),("fpn","resnet18","none",None),
                          ("unet","tu-tf_efficientnet_lite0","imagenet-offline",[128,64,32,16,8]),
                          ("fpn","tu-tf_efficientnet_lite0","imagenet-offline",None),
                          ("unet","tu-tf_efficientnet_lite0","imagenet-offline",[64,48,32,16,8])]:
    m = build_model(arch, enc, 5, w, dec); opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x = torch.rand(16,3,128,128); y = torch.randint(0,5,(16,128,128))
    for i in range(8):
        if i == 3: t = time.perf_counter()
        loss = partial_focal_ce(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
    dt = (time.perf_counter()-t)/5
    m.eval()
    with torch.inference_mode():
        xe = torch.rand(1,3,512,512); m(xe); t=time.perf_counter(); m(xe); m(xe); te=(time.perf_counter()-t)/2
    print(f"{arch:6s} {enc:26s} {str(dec):22s} {16/dt:6.1f} img/s train@128   infer {0.262/te:5.2f} Mpx/s", flush=True)
