from pathlib import Path

import pytest

from pointseg.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "points.n_per_class=5", "data.train_groups=['1','2']", "seed=7"])
    assert (cfg.train.epochs, cfg.points.n_per_class, cfg.data.train_groups, cfg.seed) == (3, 5, ["1", "2"], 7)
    assert cfg.loss.gamma == 2.0


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'train.epoch'.*did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        load_config(None, ["nope=1"])


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("loss:\n  gama: 1\n")
    with pytest.raises(ConfigError, match=r"x\.yaml.*'loss.gama'.*'gamma'"):
        load_config(p)


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 reads 4e-3 as a string; a learning rate written that way must still be the number
    assert load_config(None, ["train.lr=4e-3"]).train.lr == 4e-3
    with pytest.raises(ConfigError, match="train.lr: expected a number"):
        load_config(None, ["train.lr=fast"])


def test_wrong_types_and_choices():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(None, ["train.epochs=abc"])
    with pytest.raises(ConfigError, match="points.strategy"):
        load_config(None, ["points.strategy=random"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem or cfg.name


def test_machine_settings_do_not_make_another_run():
    """Every key the study runner's --set accepts (MACHINE_KEYS) is one config_differences ignores: a study run
    with --set train.compile_loss=true reads its committed exports back instead of refusing them."""
    from pointseg.config import MACHINE_KEYS, config_differences

    base = load_config(None)
    machine = ["wandb.mode=online", "train.threads=1", "train.device=cuda", "train.compile_loss=true",
               "train.reduction_batchnorm=false", "train.fused_adamw=false", "eval.batch_size=3", "name=elsewhere",
               "out_dir=/tmp/x", "export_dir=/tmp/y"]
    assert all(any(m.startswith(k) for m in machine) for k in MACHINE_KEYS)  # each of them is tried
    assert config_differences(base, load_config(None, overrides=machine)) == []
    assert config_differences(base, load_config(None, overrides=["loss.gamma=0"])) == ["loss.gamma: 2.0 there, 0.0 now"]


@pytest.mark.parametrize("config, cell", [("best-teacher", "teacher"), ("best", "st-mixed")])
def test_make_best_trains_what_the_study_measured(config, cell):
    """`make best` (README) claims the study self-training-mixed's numbers: its configs must compute the very runs
    that study exported, seed by seed; only where the student finds its teacher may differ."""
    import json

    from pointseg.config import config_differences, config_from_dict

    exports = sorted((ROOT / "results" / "self-training-mixed" / cell).glob("seed*.json"))
    assert len(exports) == 3, f"the study's {cell} exports: {exports}"  # none found would check nothing
    for export in exports:
        rec = json.loads(export.read_text())
        wanted = load_config(ROOT / "experiments" / f"{config}.yaml", [f"seed={rec['seed']}"])
        diffs = [d for d in config_differences(config_from_dict(rec["config"]), wanted)
                 if not d.startswith("selftrain.teacher:")]
        assert diffs == [], f"{config}.yaml differs from {export.relative_to(ROOT)}: {diffs}"


@pytest.mark.parametrize("seed", [0, 7])
def test_make_best_student_finds_the_teacher_it_trained(seed):
    """best.yaml's student loads its weights from where best-teacher.yaml's run writes them, seed by seed."""
    from pointseg.selftrain import teacher_location
    from pointseg.train import default_run_dir

    student = load_config(ROOT / "experiments" / "best.yaml", [f"seed={seed}"])
    teacher = load_config(ROOT / "experiments" / "best-teacher.yaml", [f"seed={seed}"])
    assert teacher_location(student) == default_run_dir(teacher)


def test_make_best_runs_the_teacher_then_its_student():
    import subprocess

    def make(*args):
        out = subprocess.run(["make", "-n", "best", *args], capture_output=True, text=True, cwd=ROOT, check=True)
        return [line for line in out.stdout.splitlines() if "-m pointseg best" in line]

    # one command, the teacher then its student (tests/test_best.py: the two configs and a tiny end-to-end run)
    assert [line.split("-m ", 1)[1] for line in make("SEED=4")] == ["pointseg best seed=4"]
    mine = make("SEED=1", "DATA=my.yaml")
    assert [line.split("-m ", 1)[1] for line in mine] == ["pointseg best --data my.yaml seed=1"]


@pytest.mark.parametrize("arm", ["points", "full"])
def test_the_default_runs_are_their_reference_twins_on_the_quick_schedule(arm):
    """experiments/<arm>.yaml (the user's default run, `make demo`, the speed bar) and <arm>-reference.yaml (the base
    of the studies) must compute the same run but for the quick schedule that study quick-schedule measured: any other
    difference would make the README's numbers for the one say nothing about the other."""
    from pointseg.config import config_differences

    default = load_config(ROOT / "experiments" / f"{arm}.yaml")
    reference = load_config(ROOT / "experiments" / f"{arm}-reference.yaml")
    assert config_differences(reference, default) == ["model.freeze_levels: 0 there, 2 now",
                                                      "train.steps_per_epoch: 200 there, 135 now"]
    assert (reference.train.epochs, reference.train.steps_per_epoch) == (8, 200)  # the TrainConfig defaults
