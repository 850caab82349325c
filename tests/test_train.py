"""The one trainer on a tiny generated data set: run directory, determinism, resume, bad input."""

import json

import numpy as np
import pytest
import torch
import yaml

from pointseg.train import TrainingError, fit


def test_run_directory_holds_everything(tiny_config, tmp_path):
    cfg = tiny_config()
    res = fit(cfg, progress=False)
    d = res.run_dir
    for name in ("config.yaml", "points.json", "points.csv", "metrics.jsonl", "best.pt", "final.json", "export.json"):
        assert (d / name).exists(), name
    assert not (d / "last.pt").exists()
    assert yaml.safe_load((d / "config.yaml").read_text())["seed"] == cfg.seed
    final = json.loads((d / "final.json").read_text())
    assert 0 <= final["test/miou"] <= 1 and 0 <= final["val/miou"] <= 1 and final["best_epoch"] in (1, 2)
    assert len(res.history) == 2 and res.history[0]["epoch"] == 1
    pts = json.loads((d / "points.json").read_text())
    assert pts["seed"] == cfg.seed and pts["points_total"] == len((d / "points.csv").read_text().splitlines()) - 1
    # best.pt carries the class mix of the clicks the loss saw (pointseg/prior.py reads it)
    import torch

    classes = [int(line.rsplit(",", 1)[1]) for line in (d / "points.csv").read_text().splitlines()[1:]]
    stored = torch.load(d / "best.pt", weights_only=True)["label_prior"]
    assert stored == pytest.approx((np.bincount(classes, minlength=len(stored)) / len(classes)).tolist())
    # a finished run is returned, not trained again
    again = fit(cfg, progress=False)
    assert again.final == final
    # ... and its export, when lost, is copied back whole from the run directory (machine and thumbnails too) ...
    from pointseg.export import export_path
    exp = export_path(cfg.export_dir, cfg.name, cfg.seed)
    first = exp.read_text()
    assert json.loads(first)["machine"]["device"] == "cpu" and json.loads(first)["samples"]
    exp.unlink()
    fit(cfg, progress=False)
    assert exp.read_text() == first
    # ... or, from a run directory of an older version without that copy, rebuilt (same numbers, no thumbnails)
    (d / "export.json").unlink()
    exp.unlink()
    fit(cfg, progress=False)
    second, first = json.loads(exp.read_text()), json.loads(first)
    assert second["final"] == first["final"] and second["history"] == first["history"]
    assert second["points"] == first["points"] and "samples" not in second


def test_same_seed_same_points_and_metrics(tiny_config, tmp_path):
    a = fit(tiny_config(extra=["name=a"]), progress=False)
    b = fit(tiny_config(extra=["name=b"]), progress=False)
    c = fit(tiny_config(extra=["name=c", "seed=1"]), progress=False)
    assert (a.run_dir / "points.csv").read_text() == (b.run_dir / "points.csv").read_text()
    assert (a.run_dir / "points.csv").read_text() != (c.run_dir / "points.csv").read_text()
    assert a.final["test/miou"] == b.final["test/miou"] and a.history[-1]["train/loss"] == b.history[-1]["train/loss"]


def test_resume_after_a_kill_gives_the_uninterrupted_result(tiny_config):
    whole = fit(tiny_config(extra=["name=whole", "train.epochs=3"]), progress=False)

    def die(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    cfg = tiny_config(extra=["name=killed", "train.epochs=3"])
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callback=die, progress=False)
    run = whole.run_dir.parent.parent / "killed" / "seed0"
    assert (run / "last.pt").exists() and not (run / "final.json").exists()
    resumed = fit(cfg, progress=False)
    assert len(resumed.history) == 3
    assert [r["train/loss"] for r in resumed.history] == pytest.approx([r["train/loss"] for r in whole.history])
    assert resumed.final["test/miou"] == pytest.approx(whole.final["test/miou"])


def test_full_supervision_uses_dense_masks(tiny_config):
    res = fit(tiny_config(extra=["name=full", "points.supervision=full"]), progress=False)
    pts = json.loads((res.run_dir / "points.json").read_text())
    assert pts["supervision"] == "full" and pts["labelled_pixels"] > 1000
    assert not (res.run_dir / "points.csv").exists()


def test_nan_loss_stops_with_a_message_naming_the_step(tiny_config, monkeypatch):
    import pointseg.train as train_mod

    real = train_mod.PartialFocalCE

    class Exploding(real):
        def forward(self, logits, target):
            return super().forward(logits, target) * float("nan")

    monkeypatch.setattr(train_mod, "PartialFocalCE", Exploding)
    with pytest.raises(TrainingError, match="loss is nan at epoch 1, step 1"):
        fit(tiny_config(extra=["name=nan"]), progress=False)


def test_sparse_budget_trains_without_nan(tiny_config):
    # one click per class: most crops hold no point; they are skipped and the loss stays finite
    res = fit(tiny_config(extra=["name=one", "points.n_per_class=1"]), progress=False)
    assert all(np.isfinite(r["train/loss"]) for r in res.history)


def test_wandb_offline_run_reads_back_with_config_summary_and_prediction_images(tiny_config):
    import subprocess
    import sys
    from pathlib import Path

    res = fit(tiny_config(extra=["name=wb", "wandb.mode=offline", "wandb.group=study-x", "train.epochs=1"]),
              progress=False)
    runs = list((res.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    log = next(runs[0].glob("*.wandb"))
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--json", str(log)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    summary = {k: v for r in records if r.get("type") == "summary" for k, v in r["summary"].get("update", {}).items()}
    assert summary["test/miou"] == pytest.approx(res.final["test/miou"])
    assert "study-x" in out and '"n_per_class"' in out  # the group and the config are in the log
    images = sorted((runs[0] / "files" / "media" / "images").rglob("predictions_*.png"))
    assert len(images) == 2 and all(p.stat().st_size > 100 for p in images)


def test_a_run_directory_of_another_config_is_refused(tiny_config):
    first = fit(tiny_config(extra=["name=same", "train.epochs=1"]), progress=False)
    again = fit(tiny_config(extra=["name=same", "train.epochs=1", "train.threads=1"]), progress=False)
    assert again.final == first.final  # a finished run is returned when only non-numeric keys changed
    # the semi-supervised settings do not matter while its weight is 0
    assert fit(tiny_config(extra=["name=same", "train.epochs=1", "semi.method=mean_teacher"]),
               progress=False).final == first.final
    with pytest.raises(TrainingError, match=r"another config \(loss.gamma: 2.0 there, 0.0 now"):
        fit(tiny_config(extra=["name=same", "train.epochs=1", "loss.gamma=0"]), progress=False)


def test_a_run_repeated_in_fresh_processes_gives_the_same_numbers(tiny_config, tmp_path):
    """A seed fixes a run across processes too: nothing may hang on Python's per-process hash seed, the order of a
    set or dict of strings, or state left by an earlier run in the same interpreter."""
    import os
    import subprocess
    import sys

    from pointseg.config import save_config

    finals = []
    for i, hash_seed in enumerate(("1", "2")):
        cfg = tiny_config(extra=[f"name=fresh{i}", "train.epochs=1"])
        path = tmp_path / f"fresh{i}.yaml"
        save_config(cfg, path)
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "pointseg", "train", "--config", str(path), "--no-wandb"], env=env,
                       check=True, capture_output=True, timeout=600)
        finals.append(json.loads((tmp_path / "runs" / f"fresh{i}" / "seed0" / "final.json").read_text()))
    keys = [k for k, v in finals[0].items()  # every number but the speeds and wall times
            if isinstance(v, float) and "seconds" not in k and not k.endswith("_per_s")]
    assert "test/miou" in keys and [k for k in keys if finals[0][k] != finals[1][k]] == []


def test_early_crops_train_the_first_steps_on_smaller_crops_and_resume_across_the_switch(tiny_config, monkeypatch):
    import pointseg.train as train_mod

    early = ["train.epochs=3", "train.early_crop_size=32", "train.early_crop_steps=3"]
    seen: list[int] = []
    real_step = train_mod._train_step

    def spy(r, x, y, step):
        seen.append(x.shape[-1])
        return real_step(r, x, y, step)

    monkeypatch.setattr(train_mod, "_train_step", spy)
    whole = fit(tiny_config(extra=["name=early", *early]), progress=False)
    assert seen == [32, 32, 32, 64, 64, 64]  # 3 steps at 32 px, the rest at train.crop_size (64)
    plain = fit(tiny_config(extra=["name=plain", "train.epochs=3"]), progress=False)
    assert plain.history[0]["train/loss"] != whole.history[0]["train/loss"]

    def die(epoch, row):  # killed after epoch 1, inside the early stage
        if epoch == 1:
            raise KeyboardInterrupt

    cfg = tiny_config(extra=["name=early-killed", *early])
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, callback=die, progress=False)
    seen.clear()
    resumed = fit(cfg, progress=False)
    assert seen == [32, 64, 64, 64]
    assert [r["train/loss"] for r in resumed.history] == pytest.approx([r["train/loss"] for r in whole.history])
    assert resumed.final["test/miou"] == pytest.approx(whole.final["test/miou"])


@pytest.mark.parametrize("extra, message", [
    (["train.early_crop_steps=2"], "needs train.early_crop_size"),
    (["train.early_crop_size=48", "train.early_crop_steps=1"], "multiple of 32"),
    (["train.early_crop_size=32", "train.early_crop_steps=99"], "between 0 and the run's 4 steps"),
    (["train.jitter=1.0"], "train.jitter must be in"),
])
def test_bad_crop_settings_are_refused_before_training(tiny_config, extra, message):
    from pointseg.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        fit(tiny_config(extra=["name=bad", *extra]), progress=False)


def test_cheaper_step_settings_change_only_the_rounding(tiny_config, monkeypatch):
    """train.reduction_batchnorm and train.fused_adamw (machine settings) reach the trainer and train the same run:
    the losses of every epoch agree with the plain kernels' up to float rounding."""
    import pointseg.train as trainer

    rerouted, real = [], trainer.use_reduction_batchnorm
    monkeypatch.setattr(trainer, "use_reduction_batchnorm", lambda model: rerouted.append(real(model)))
    plain = fit(tiny_config(extra=["name=plain", "train.reduction_batchnorm=false", "train.fused_adamw=false"]),
                progress=False)
    assert rerouted == []
    cheap = fit(tiny_config(extra=["name=cheap", "train.reduction_batchnorm=true", "train.fused_adamw=true"]),
                progress=False)
    assert len(rerouted) == 1 and rerouted[0] > 0  # the tiny decoder's 8- and 16-channel BatchNorms
    assert [r["train/loss"] for r in cheap.history] == pytest.approx([r["train/loss"] for r in plain.history],
                                                                     rel=1e-3)
    assert cheap.final["val/miou"] == pytest.approx(plain.final["val/miou"], abs=0.02)


@pytest.mark.parametrize("extra, strength", [
    (["train.jitter=0.25"], 0.25),
    # with a teacher, the student's view (which the clicks' loss sees too) takes the strong jitter instead
    (["train.jitter=0.25", "semi.method=fixmatch", "semi.weight=1.0", "semi.strong_jitter=0.4"], 0.4),
])
def test_the_crops_photometric_jitter_has_the_configured_strength(tiny_config, monkeypatch, extra, strength):
    import pointseg.train as train_mod

    seen = []
    real = train_mod.photometric_jitter

    def spy(x, gen, s):
        seen.append(s)
        return real(x, gen, s)

    monkeypatch.setattr(train_mod, "photometric_jitter", spy)
    fit(tiny_config(extra=["name=jitter", *extra]), progress=False)
    assert seen and set(seen) == {strength}


@pytest.mark.parametrize("method", ["fixmatch", "consistency"])
def test_clicks_view_weak_gives_the_clicks_their_own_pass_on_the_weak_view(tiny_config, monkeypatch, method):
    """semi.clicks_view=weak: the clicks' pfCE sees only forward passes of the lightly jittered crop (not moved by
    the consistency method's rot/flip and CutMix); strong (the default): the strong view's one pass serves both."""
    import pointseg.train as train_mod

    # each jitter paints the crop with its strength, so a forward pass's input tells which view it is
    monkeypatch.setattr(train_mod, "photometric_jitter", lambda x, gen, s: torch.full_like(x, s))
    view_of, seen = {}, []
    real_build, real_loss = train_mod.build_model, train_mod.PartialFocalCE.forward

    def build(*a, **k):
        model = real_build(*a, **k)
        model.register_forward_hook(lambda m, inp, out: view_of.__setitem__(id(out), round(float(inp[0].mean()), 4)))
        return model

    def loss(self, logits, target):
        seen.append(view_of.get(id(logits)))
        return real_loss(self, logits, target)

    monkeypatch.setattr(train_mod, "build_model", build)
    monkeypatch.setattr(train_mod.PartialFocalCE, "forward", loss)
    views = {}
    for clicks_view in ("weak", "strong"):
        seen.clear()
        fit(tiny_config(extra=[f"name=cv-{method}-{clicks_view}", f"semi.method={method}", "semi.weight=1.0",
                               "semi.rampup_epochs=0", "semi.strong_jitter=0.4", "train.jitter=0.25",
                               f"semi.clicks_view={clicks_view}"]), progress=False)
        views[clicks_view] = set(seen)
    assert views == {"weak": {0.25}, "strong": {0.4}}, views


def test_clicks_view_weak_is_refused_for_a_method_without_a_teacher(tiny_config):
    from pointseg.config import ConfigError

    with pytest.raises(ConfigError, match="semi.method=gated_crf has no teacher"):
        fit(tiny_config(extra=["name=cv", "semi.method=gated_crf", "semi.weight=0.1", "semi.clicks_view=weak"]),
            progress=False)


def test_a_registered_method_is_weighted_and_ramped_once_by_the_trainer(tiny_config, monkeypatch):
    """A method registered in pointseg.unlabelled.METHODS is all a new unlabelled-pixel method needs; its loss is
    unweighted and the trainer multiplies it by semi.weight × the ramp-up, once."""
    import numpy as np

    from pointseg import unlabelled

    class Constant(unlabelled.NoView):  # a loss of exactly 1 on every step
        strong_view, last_fraction = False, 1.0

        def __init__(self, model, cfg):
            pass

        def loss(self, logits, clean, target):
            return logits.sum() * 0.0 + 1.0

    monkeypatch.setitem(unlabelled.METHODS, "gated_crf", Constant)
    cfg = tiny_config(extra=["semi.method=gated_crf", "semi.weight=0.7", "semi.rampup_epochs=2", "train.epochs=3"])
    res = fit(cfg, progress=False)
    steps = cfg.train.steps_per_epoch
    for row in res.history:
        e = row["epoch"] - 1
        want = np.mean([unlabelled.scale(cfg.semi, (e * steps + s) / steps) for s in range(steps)])
        assert row["train/loss"] - row["train/sup_loss"] == pytest.approx(want, rel=1e-5)
