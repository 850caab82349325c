"""The framework around the loss: TTA, ensembles, histogram matching, mean teacher, frozen/loaded encoders."""

import numpy as np
import pytest
import torch

from pointseg.config import SemiConfig
from pointseg.data.style import HistogramStyle
from pointseg.infer import _d4_forward, _d4_inverse, predict_probs, to_full_resolution
from pointseg.models import build_model
from pointseg.train import fit
from pointseg.unlabelled import rampup, scale
from pointseg.unlabelled.semi import Teacher


class _Probe(torch.nn.Module):
    """Logits that depend on position: class 0 where the red channel is high, else class 1."""

    def forward(self, x):
        return torch.cat([x[:, :1] * 10, 5 - x[:, :1] * 10], 1)


class _Corner(torch.nn.Module):
    """Not equivariant: always votes class 0 in the top-left quarter of whatever it is shown."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 2, *x.shape[2:])
        out[:, 0, : x.shape[2] // 2, : x.shape[3] // 2] = 10
        return out


def test_d4_inverse_undoes_every_transform():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert all(torch.equal(_d4_inverse(_d4_forward(x, k), k), x) for k in range(8))
    assert len({_d4_forward(x, k).flatten().tolist().__str__() for k in range(8)}) == 8


def test_sliding_window_matches_one_pass_and_tta_averages_views():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (70, 90, 3)).astype(np.uint8)
    one = predict_probs(_Probe(), image, window=512)
    tiled = predict_probs(_Probe(), image, window=32, overlap=0.5)
    assert one.shape == (2, 70, 90) and torch.allclose(one, tiled, atol=1e-5)  # position-wise model
    assert torch.allclose(predict_probs(_Probe(), image, window=64, tta=True), one, atol=1e-5)  # equivariant
    # a model that is not equivariant: TTA mixes its 8 views, so the top-left vote is diluted to 1/4 area-wise
    plain = predict_probs(_Corner(), np.zeros((64, 64, 3), np.uint8), window=64)
    tta = predict_probs(_Corner(), np.zeros((64, 64, 3), np.uint8), window=64, tta=True)
    assert plain[0, 0, 0] > 0.99 and tta[0, 0, 0] < 0.99 and torch.allclose(tta[0], tta[0].flip(-1), atol=1e-6)


def test_ensemble_is_the_mean_of_probabilities():
    image = np.random.default_rng(1).integers(0, 255, (40, 40, 3)).astype(np.uint8)
    a, b = _Probe(), _Corner()
    ens = predict_probs([a, b], image, window=64)
    assert torch.allclose(ens, (predict_probs(a, image, window=64) + predict_probs(b, image, window=64)) / 2,
                          atol=1e-6)


def test_full_resolution_labels():
    probs = torch.zeros(2, 2, 2)
    probs[1, :, 1] = 1
    lab = to_full_resolution(probs, (4, 4))
    assert lab.shape == (4, 4) and (lab[:, 3] == 1).all() and (lab[:, 0] == 0).all()


def test_histogram_matching_moves_an_image_to_the_reference_style():
    rng = np.random.default_rng(0)
    train = [rng.normal(120, 30, (50, 50, 3)).clip(0, 255).astype(np.uint8) for _ in range(3)]
    style = HistogramStyle.fit(train)
    dark = (train[0] * 0.4).astype(np.uint8)
    matched = style(dark)
    assert abs(matched.mean() - np.mean(train)) < 3 and abs(dark.mean() - np.mean(train)) > 50
    again = HistogramStyle.from_state(style.state())  # what the checkpoint stores is enough
    assert np.array_equal(again(dark), matched)


def test_group_matching_moves_a_tile_to_the_reference_and_keeps_its_parts_apart():
    from types import SimpleNamespace

    rng = np.random.default_rng(1)
    train = [rng.normal(120, 30, (40, 40, 3)).clip(0, 255).astype(np.uint8) for _ in range(3)]
    style = HistogramStyle.fit(train, scope="group")
    # one dark acquisition: a part that is mostly water (darker) and a part of the city (brighter)
    water = (rng.normal(70, 10, (40, 40, 3)) * 0.5).clip(0, 255).astype(np.uint8)
    city = (rng.normal(150, 10, (40, 40, 3)) * 0.5).clip(0, 255).astype(np.uint8)
    scenes = [SimpleNamespace(image=water, group="9"), SimpleNamespace(image=city, group="9")]
    out_w, out_c = style.restyle(scenes)
    both = np.concatenate([out_w, out_c])
    assert abs(both.mean() - np.mean(train)) < 6  # the tile as a whole takes the training style
    assert out_c.mean() - out_w.mean() > 30  # its parts keep their own composition
    per_image = HistogramStyle(style.reference, "image").restyle(scenes)
    assert abs(per_image[1].mean() - per_image[0].mean()) < 6  # per image: both parts pushed to the same style
    again = HistogramStyle.from_state(style.state())
    assert again.scope == "group" and np.array_equal(again.restyle(scenes)[0], out_w)


def test_mean_teacher_pseudo_labels_only_confident_unlabelled_pixels():
    student = _Probe()
    teacher = Teacher(student, SemiConfig(weight=1.0, threshold=0.9, ema=0.5, rampup_epochs=0))
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0, 0, 0] = 1.0  # teacher: confident class 0 here; p(class 1) = sigmoid(5) ≈ 0.993 elsewhere
    target = torch.full((1, 2, 2), 255)
    target[0, 1, 1] = 0  # a labelled point is never pseudo-labelled
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    loss = teacher.loss(logits, x, target)
    assert loss.item() == pytest.approx(np.log(2), rel=1e-5)  # uniform student vs 3 confident pseudo-labels
    loss.backward()
    assert logits.grad[0, :, 1, 1].abs().sum() == 0
    assert rampup(0, 2) < 0.01 and rampup(2, 2) == 1.0 and scale(SemiConfig(weight=3.0, rampup_epochs=2), 2) == 3.0


def test_class_balanced_pseudo_labels_weigh_each_class_equally():
    teacher = Teacher(_Probe(), SemiConfig(weight=1.0, threshold=0.9, rampup_epochs=0, class_balance=True))
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0, 0, 0] = 1.0  # pseudo-labels: class 0 on one pixel, class 1 on three
    target = torch.full((1, 2, 2), 255)
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, 0, 0] = 2.0  # the student is right and confident on the class-0 pixel only
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([[[0, 1], [1, 1]]]), reduction="none")[0]
    balanced = teacher.loss(logits, x, target).item()
    assert balanced == pytest.approx((ce[0, 0] + ce.flatten()[1:].mean()).item() / 2, rel=1e-5)
    plain = Teacher(_Probe(), SemiConfig(weight=1.0, threshold=0.9, rampup_epochs=0))
    assert plain.loss(logits, x, target).item() == pytest.approx(ce.mean().item(), rel=1e-5)
    assert teacher.last_fraction == 1.0


def test_ema_update():
    s = torch.nn.Linear(2, 2)
    t = Teacher(s, SemiConfig(weight=1.0, method="mean_teacher", ema=0.75))
    before = t.model.weight.detach().clone()
    with torch.no_grad():
        s.weight.add_(4.0)
    t.update(s, step=10)
    assert torch.allclose(t.model.weight, 0.75 * before + 0.25 * s.weight)


def test_ema_warm_up_follows_the_student_early():
    t = Teacher(torch.nn.Linear(2, 2), SemiConfig(weight=1.0, method="mean_teacher", ema=0.99))
    assert t.decay(0) == 0.5 and t.decay(8) == pytest.approx(0.9)  # 1 - 1/(step + 2)
    assert t.decay(98) == pytest.approx(0.99) and t.decay(10_000) == 0.99  # then the configured EMA
    s = torch.nn.Linear(2, 2)
    t = Teacher(s, SemiConfig(weight=1.0, method="mean_teacher", ema=0.99))
    w0 = t.model.weight.detach().clone()
    with torch.no_grad():
        s.weight.fill_(1.0)
    t.update(s, step=0)  # a fixed 0.99 would keep 99 % of the random initial weights
    assert torch.allclose(t.model.weight, 0.5 * w0 + 0.5)


def test_fixmatch_teacher_is_the_current_student():
    s = torch.nn.Linear(2, 2)
    t = Teacher(s, SemiConfig(weight=1.0, method="fixmatch", ema=0.99))  # ema is the mean teacher's only
    with torch.no_grad():
        s.weight.fill_(3.0)
    t.update(s, step=1000)
    assert torch.equal(t.model.weight, s.weight) and not t.model.weight.requires_grad


def test_trainer_runs_semi_supervised_and_style(tiny_config):
    res = fit(tiny_config(extra=["name=semi", "semi.weight=1.0", "semi.rampup_epochs=0", "semi.threshold=0.0",
                                 "train.histogram_match=true"]), progress=False)
    ckpt = torch.load(res.run_dir / "best.pt", weights_only=True)
    assert ckpt["style"] is not None and np.isfinite(res.final["test/miou"])
    # with threshold 0 every unlabelled pixel is pseudo-labelled, so the total loss exceeds the supervised one
    assert all(r["train/loss"] > r["train/sup_loss"] for r in res.history[1:])


def test_frozen_encoder_does_not_move(tiny_config, monkeypatch):
    import pointseg.train as train_mod

    seen = {}
    real = train_mod.build_model

    def spy(*a, **k):
        seen["model"] = real(*a, **k)
        seen["enc"] = {n: p.detach().clone() for n, p in seen["model"].encoder.named_parameters()}
        return seen["model"]

    monkeypatch.setattr(train_mod, "build_model", spy)
    fit(tiny_config(extra=["name=frozen", "model.freeze_encoder_epochs=2"]), progress=False)
    now = dict(seen["model"].encoder.named_parameters())
    assert all(torch.equal(now[n], p) for n, p in seen["enc"].items())


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_frozen_levels_keep_their_pretrained_weights_and_the_rest_trains(tiny_config, monkeypatch, warmup_epochs):
    """model.freeze_levels=2: the stem, blocks.0 and blocks.1 (strides 2 and 4) never move, also after a frozen
    warm-up of the whole encoder ends; blocks.2 onwards and the decoder train."""
    import pointseg.train as train_mod

    seen = {}
    real = train_mod.build_model

    def spy(*a, **k):
        seen["model"] = real(*a, **k)
        seen["before"] = {n: p.detach().clone() for n, p in seen["model"].named_parameters()}
        return seen["model"]

    monkeypatch.setattr(train_mod, "build_model", spy)
    fit(tiny_config(extra=[f"name=levels{warmup_epochs}", "model.freeze_levels=2",
                           f"model.freeze_encoder_epochs={warmup_epochs}"]), progress=False)
    now = dict(seen["model"].named_parameters())
    moved = {n for n, p in seen["before"].items() if not torch.equal(now[n], p)}
    frozen = {n for n in now if n.startswith(("net.encoder.model.conv_stem", "net.encoder.model.bn1",
                                              "net.encoder.model.blocks.0.", "net.encoder.model.blocks.1."))}
    assert frozen and not frozen & moved
    assert any(n.startswith("net.encoder.model.blocks.2.") for n in moved)
    assert any(n.startswith("net.decoder.") for n in moved)


def test_frozen_parameter_names_follow_the_feature_levels():
    from pointseg.models import frozen_parameter_names

    model = build_model("unet", "tu-tf_efficientnet_lite0", 5, "none", [32, 16, 16, 8, 8])
    assert frozen_parameter_names(model, 0) == set()
    one = frozen_parameter_names(model, 1)
    two = frozen_parameter_names(model, 2)
    assert one < two and all(n.startswith(("model.conv_stem", "model.bn1", "model.blocks.0.")) for n in one)
    assert {n for n in two - one} == {n for n, _ in model.encoder.named_parameters() if n.startswith("model.blocks.1.")}
    with pytest.raises(ValueError, match="between 0 and 4"):
        frozen_parameter_names(model, 5)
    with pytest.raises(ValueError, match="timm encoder"):
        frozen_parameter_names(build_model("unet", "resnet18", 5, "none"), 1)


def test_a_feature_level_from_a_weightless_module_is_refused_by_name():
    import types

    from pointseg.models import frozen_parameter_names

    features = torch.nn.Sequential()
    features.add_module("conv", torch.nn.Conv2d(3, 4, 3))
    features.add_module("act", torch.nn.ReLU())
    features.add_module("head", torch.nn.Conv2d(4, 4, 3))
    features.feature_info = types.SimpleNamespace(module_name=lambda: ["act", "head", "head"])
    model = types.SimpleNamespace(encoder=types.SimpleNamespace(model=features))
    with pytest.raises(ValueError, match="'act', which holds no weights"):
        frozen_parameter_names(model, 1)
    assert frozen_parameter_names(model, 2) == {"model.conv.weight", "model.conv.bias", "model.head.weight",
                                                "model.head.bias"}


@pytest.mark.parametrize("extra,message", [
    (["model.freeze_levels=-1"], "model.freeze_levels must be >= 0"),
    (["model.freeze_levels=2", "model.encoder_weights=none"], "random"),
    (["model.freeze_levels=5"], "model.freeze_levels must be between 0 and 4"),
])
def test_bad_freeze_levels_are_refused_naming_the_key(tiny_config, extra, message):
    from pointseg.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        fit(tiny_config(extra=["name=badfreeze", *extra]), progress=False)


def test_encoder_weights_from_a_checkpoint_file(tiny_config, tmp_path):
    res = fit(tiny_config(extra=["name=src"]), progress=False)
    model = build_model("unet", "tu-tf_efficientnet_lite0", 5, str(res.run_dir / "best.pt"), [32, 16, 16, 8, 8])
    sd = torch.load(res.run_dir / "best.pt", weights_only=True)["model"]
    assert torch.equal(model.encoder.model.conv_stem.weight, sd["net.encoder.model.conv_stem.weight"])


def test_unlabelled_diagnostics_count_only_unclicked_pseudo_labelled_pixels_per_class():
    from pointseg.data.raster import IGNORE_INDEX as ig
    from pointseg.train import unlabelled_diagnostics

    target = torch.tensor([[0, ig, ig, ig, ig, ig]])  # pixel 0 clicked: never counted
    dense = torch.tensor([[0, 0, 1, 1, 1, ig]])  # pixel 5 has no dense label: never counted
    pseudo = torch.tensor([[0, 0, 0, 0, ig, 1]])  # the teacher calls pixels 1-3 class 0, skips 4
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 0, 1, 0, 1, 1]]), 2).permute(0, 2, 1)[..., None]
    d = unlabelled_diagnostics(logits.float(), target[..., None], dense[..., None], pseudo[..., None], ["a", "b"])
    assert d["diag/unlabelled_acc"] == pytest.approx(3 / 4)  # pixels 1-4: 0, 1, 0, 1 against 0, 1, 1, 1
    assert d["diag/pseudo_coverage"] == pytest.approx(3 / 4) and d["diag/pseudo_precision"] == pytest.approx(1 / 3)
    assert d["diag/pseudo_share/a"] == 1.0 and d["diag/pseudo_share/b"] == 0.0  # all labels say a ...
    assert d["diag/pseudo_true_share/a"] == pytest.approx(1 / 3)  # ... where a third is a in truth
    assert d["diag/pseudo_true_share/b"] == pytest.approx(2 / 3)
    assert d["diag/unlabelled_share/a"] == pytest.approx(1 / 4)  # pixels 1-4 in truth: 0, 1, 1, 1
    assert "diag/pseudo_share/a" not in unlabelled_diagnostics(logits.float(), target[..., None], dense[..., None],
                                                              None, ["a", "b"])


def test_pseudo_label_diagnostics_are_logged_and_never_change_training(tiny_config, monkeypatch):
    import pointseg.train as train_mod

    extra = ["semi.weight=1.0", "semi.rampup_epochs=0", "semi.threshold=0.0"]
    real = fit(tiny_config(extra=["name=diag", *extra]), progress=False)
    for row in real.history:
        assert 0 <= row["diag/pseudo_precision"] <= 1 and row["diag/pseudo_coverage"] == pytest.approx(1.0)
        assert 0 <= row["diag/unlabelled_acc"] <= 1

    class Scrambled(train_mod.CropSampler):  # the same run with nonsense "dense masks"
        def __init__(self, *a, diagnostic=None, **k):
            rng = np.random.default_rng(0)
            junk = None if diagnostic is None else [rng.integers(0, 5, m.shape) for m in diagnostic]
            super().__init__(*a, diagnostic=junk, **k)

    monkeypatch.setattr(train_mod, "CropSampler", Scrambled)
    junk = fit(tiny_config(extra=["name=diag-junk", *extra]), progress=False)
    assert [r["train/loss"] for r in junk.history] == [r["train/loss"] for r in real.history]
    assert junk.final["test/miou"] == real.final["test/miou"]
    assert [r["diag/pseudo_precision"] for r in junk.history] != [r["diag/pseudo_precision"] for r in real.history]
