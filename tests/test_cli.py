"""actlab-train end to end: the run directory contract, sweeps, config groups, user errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab import activations
from actlab.cli import activations_main, check_keys, config_dir, readme, report_main, unknown_key
from actlab.config import Config, ConfigError
from actlab.engine.resolve import resolve
from actlab.runs import driver as train
from conftest import read_records

EXE = str(Path(sys.executable).parent / "actlab-train")
PER_LAYER = ("grad_norm", "weight_norm", "update_ratio", "delta_norm", "act_mean", "act_std",
             "dead_frac", "sat_frac")
SUMMARY_CONTRACT = ("final_train_loss", "final_eval_loss", "final_eval_acc", "best_eval_acc",
                    "steps_to_target", "time_to_target", "loss_auc", "diverged_at")


def cli(*args, timeout=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def composed(*overrides) -> Config:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    d = OmegaConf.to_container(cfg, resolve=True)
    return resolve(Config.from_dict(d))


def test_run_directory_contract(tmp_path):
    out = tmp_path / "run"
    p = cli("train.seeds=4", "model.depth=6", "train.steps=100", "train.log_every=50",
            "train.eval_every=50", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    assert f"run directory: {out}" in p.stdout
    recs = read_records(out)
    assert sorted({r["seed"] for r in recs}) == [0, 1, 2, 3]
    assert sorted({r["step"] for r in recs}) == [0, 50, 100]
    for r in recs:
        for key in ("step", "seed", "wall_time", "train/loss", "train/acc"):
            assert key in r
        for m in PER_LAYER:
            for l in range(6):
                assert f"{m}/{l}" in r
        assert "grad_norm/6" not in r
    assert all("eval/acc" in r and "eval/loss" in r for r in recs)
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed"
    assert s["config"]["model"]["depth"] == 6 and s["config"]["train"]["seeds"] == 4
    assert [m["seed"] for m in s["seeds"]] == [0, 1, 2, 3]
    for key in SUMMARY_CONTRACT:
        assert key in s["seeds"][0] and key in s["aggregate"]
    hydra_cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    assert hydra_cfg["model"]["depth"] == 6


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_multirun_one_job_per_combination(tmp_path):
    p = cli("-m", "activation=relu,tanh", "model.depth=2,4", "+experiment=debug",
            f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    combos = set()
    for job in sorted(d for d in tmp_path.iterdir() if d.is_dir()):
        s = json.loads((job / "summary.json").read_text())
        assert s["status"] == "completed"
        combos.add((s["config"]["activation"]["name"], s["config"]["model"]["depth"]))
        depth = s["config"]["model"]["depth"]
        assert f"grad_norm/{depth - 1}" in read_records(job)[0]
    assert combos == {("relu", 2), ("relu", 4), ("tanh", 2), ("tanh", 4)}


@pytest.mark.parametrize("args,message", [
    (["activation=relux"], "unknown activation 'relux'; choose from: aptx, bilinear, celu"),
    (["dataset=mnistt"], "unknown dataset 'mnistt'; choose from: cifar10, cifar100, circle"),
    (["model=resnet9000"], "unknown model 'resnet9000'; choose from: cnn, custom, gpt, mlp"),
    (["model=cnn"], "model 'cnn' needs sequence or image inputs"),
    (["model=recommender", "dataset=digits"], "model 'recommender' needs a ratings dataset"),
    (["dataset=mnist", "dataset.data_dir=/nonexistent"], "tfds build mnist"),
    (["model.dropout=1.0"], "model.dropout must be in [0, 1), got 1.0"),
    (["model.depth=0"], "model.depth must be >= 1, got 0"),
    (["model.width=0"], "model.width must be >= 1, got 0"),
    (["model.depth=abc"], "model.depth must be an integer, got 'abc'"),
    (["optimizer.lr=-1"], "optimizer.lr must be > 0, got -1"),
    (["train.target=accuracy"], "train.target 'accuracy' is not of the form"),
    (["activation.name=nope"], "unknown activation 'nope'; known: aptx, bilinear, celu"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, message):
    p = cli(*args, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2
    err = p.stderr.strip()
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "summary.json").exists()


def test_cfg_job_prints_the_resolved_config():
    p = cli("--cfg", "job", "activation=gelu", "activation.approximate=true")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["activation"] == {"name": "gelu", "approximate": True}


def _group_options(group):
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["activation", "model", "dataset", "optimizer", "init",
                                   "logger"])
def test_every_config_group_option_composes_and_validates(group):
    for option in _group_options(group):
        # model=custom needs a factory to import (tests/custom_clients.py has some)
        extra = ["model.target=custom_clients:mlp"] if (group, option) == ("model",
                                                                            "custom") else []
        cfg = composed(f"{group}={option}", *extra)  # raises ConfigError if validation rejects it
        settings = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text())
        resolved = json.loads(json.dumps(cfg.to_dict()[group]))  # tuples as lists
        settings.update(o.split("=", 1) for o in [e.replace("model.", "") for e in extra])
        assert {k: resolved.get(k) for k in settings} == settings, option  # the file's settings


def test_every_config_key_is_commented():
    for path in config_dir().rglob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#"), f"{path} has no opening comment"
        for line in lines:
            stripped = line.strip()
            is_key = (":" in stripped and not stripped.startswith(("#", "-"))
                      and not stripped.endswith(":") and "name:" not in stripped)
            if is_key:
                assert "#" in line, f"{path}: key without a comment: {line!r}"


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_every_hidden_activation_has_a_config_and_trains_through_hydra(tmp_path):
    names = activations.names(include_output=False)
    assert _group_options("activation") == names
    for name in names:  # every option composes and validates
        composed(f"activation={name}", "+experiment=debug", "logger=none")
    # and trains: the elementwise functions one per layer of one MLP, the gated units in
    # another, the doubled units (twice as wide outputs, so no residual sums) in a third
    gated = [n for n in names if activations.info(n).gated]
    doubled = [n for n in names if activations.info(n).doubled]
    for group in ([n for n in names if n not in gated + doubled], gated, doubled):
        cfg = composed("+experiment=debug", "model=mlp", f"model.depth={len(group)}",
                       f"model.activations=[{','.join(group)}]",
                       f"model.residual={str(group != doubled).lower()}",
                       "train.steps=2", "train.log_every=1", "train.eval_every=2",
                       "logger.progress=false")
        s = train.run(cfg, tmp_path / group[0])
        assert s["status"] == "completed", group
        last = read_records(tmp_path / group[0])[-1]
        for l in range(len(group)):
            assert math.isfinite(last[f"act_std/{l}"]), group[l]


OFFLINE_MODEL = {"ratings": "model=recommender", "digits": "model=cnn",
                 "mnist1d": "model=mlp", "text": "model=gpt", "tiny_shakespeare": "model=gpt",
                 "lm1b": "model=gpt"}
TFDS = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn_cropped")


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_every_dataset_composes_and_trains_through_hydra(tmp_path):
    import tensorflow_datasets as tfds

    from actlab.data import DataError

    for name in _group_options("dataset"):
        model = "model=cnn" if name in TFDS else OFFLINE_MODEL.get(name, "model=mlp")
        extra = ["dataset.num_samples=500"] if name == "mnist1d" else []
        cfg = composed(f"dataset={name}", model, *extra, "train.steps=2",
                       "train.log_every=1", "train.eval_every=2", "logger=none",
                       "train.probe_size=16", "train.batch_size=8")
        if name == "movielens":  # its tfds builder needs TensorFlow: a clean error here
            with pytest.raises(DataError, match="tfds build movielens"):
                train.run(cfg, tmp_path / name)
            continue
        with tfds.testing.mock_data(num_examples=8):
            s = train.run(cfg, tmp_path / name)
        assert s["status"] == "completed", name


def test_output_only_functions_are_rejected_as_hidden_activations():
    for name in ("softmax", "log_softmax"):
        with pytest.raises(ConfigError, match="output-layer function"):
            composed(f"activation.name={name}")


def test_default_run_reaches_90_percent_on_the_spiral(tmp_path):
    cfg = composed("logger.progress=false")
    assert (cfg.dataset.name, cfg.model.name) == ("spiral", "mlp")
    s = train.run(cfg, tmp_path)
    assert s["status"] == "completed"
    assert s["seeds"][0]["final_eval_acc"] >= 0.9


# --------------------------------------------------------------------------- #
# Unknown keys and --help

CNN_KEYS = "activations, channels, depth, head, kernel_size, loss, name, norm, pool, stride"


def assert_one_line_error(p, message):
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == f"actlab-train: error: {message}"
    assert "Traceback" not in p.stderr and "+" not in p.stderr  # no hint to append


@pytest.mark.parametrize("args,message", [
    (["train.stepz=5"], "unknown key train.stepz; did you mean train.steps?"),
    (["model.dept=8"], "unknown key model.dept for model=mlp; did you mean model.depth?"),
    (["probes.hesian.every=10"],
     "unknown key probes.hesian.every; did you mean probes.hessian.every?"),
    (["dataset=mnist1d", "dataset.veiw=sequence"],
     "unknown key dataset.veiw for dataset=mnist1d; did you mean dataset.view?"),
    (["model=cnn", "model.width=8"],  # cnn has channels, not width
     f"unknown key model.width for model=cnn; valid keys of model: {CNN_KEYS}"),
    (["~model.dropuot"], "unknown key model.dropuot for model=mlp; did you mean model.dropout?"),
    (["model={depth:3,widht:4}"],
     "unknown key model.widht for model=mlp; did you mean model.width?"),
])
def test_unknown_keys_are_one_line_with_the_closest_valid_key(tmp_path, args, message):
    p = cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(p, message)
    assert not (tmp_path / "run").exists()


def test_unknown_key_in_a_sweep_fails_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    p = cli("-m", "model=mlp,cnn", "model.width=8", "train.steps=5", f"hydra.sweep.dir={sweep}")
    assert_one_line_error(p, f"unknown key model.width for model=cnn; valid keys of model: "
                             f"{CNN_KEYS}")
    assert not sweep.exists()


def test_unknown_keys_in_experiment_and_study_files_fail_before_any_job(tmp_path):
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    study = "defaults:\n  - config\n  - _self_\n"
    files = {
        "experiment/typo.yaml": "# @package _global_\ntrain:\n  steps: 5\n  log_evry: 1\n",
        "setting.yaml": f"{study}model:\n  widht: 16\n",
        "swept.yaml": f"{study}hydra:\n  sweeper:\n    params:\n      model.dept: 2,4\n",
        "hydra_typo.yaml": f"{study}hydra:\n  sweep:\n    dirr: somewhere\n",  # Hydra's schema
    }
    for name, text in files.items():
        (conf / name).write_text(text)
    where = conf.relative_to(Path.cwd()) if conf.is_relative_to(Path.cwd()) else conf
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    p = cli("-m", "--config-dir", str(conf), "+experiment=typo", "activation=relu,tanh", sweep)
    assert_one_line_error(p, f"unknown key train.log_evry in {where}/experiment/typo.yaml; "
                             "did you mean train.log_every?")
    p = cli("-m", "--config-dir", str(conf), "--config-name", "setting", sweep)
    assert_one_line_error(p, f"unknown key model.widht in {where}/setting.yaml for model=mlp; "
                             "did you mean model.width?")
    p = cli("-m", "--config-dir", str(conf), "--config-name", "swept", sweep)
    assert_one_line_error(p, f"unknown key model.dept in {where}/swept.yaml "
                             "(hydra.sweeper.params) for model=mlp; did you mean model.depth?")
    p = cli("--config-dir", str(conf), "--config-name", "hydra_typo",
            f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(p, f"unknown key hydra.sweep.dirr in {where}/hydra_typo.yaml; "
                             "did you mean hydra.sweep.dir?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]  # no job directory


def test_appends_forced_overrides_and_open_sections_keep_working():
    p = cli("--cfg", "job", "activation=leaky_relu", "+extra.note=hello", "++train.steps=7",
            "train.vmap.activation.alpha=[0.1,0.3]", "hydra.job.chdir=false")
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["extra"] == {"note": "hello"} and cfg["train"]["steps"] == 7
    assert cfg["train"]["vmap"]["activation"] == {"alpha": [0.1, 0.3]}


def test_check_keys_in_process(tmp_path):
    # nothing to compose: the arguments come back as given
    assert check_keys(["activation=gelu", "train.steps=3"]) == ["activation=gelu", "train.steps=3"]
    # a key new to train.vmap becomes the explicit append Hydra needs; a known one stays
    assert check_keys(["train.vmap.activation.alpha=[0.1]", "train.vmap.optimizer.lr=[0.1]"]) == [
        "++train.vmap.activation.alpha=[0.1]", "train.vmap.optimizer.lr=[0.1]"]
    with pytest.raises(SystemExit) as e:
        check_keys(["-m", "+experiment=debug,nope"])
    assert e.value.code == 2


def test_unknown_key_messages():
    tree = {"model": {"depth": 4, "width": 64}, "optimizer": {"lr": 0.1},
            "train": {"steps": 10, "seeds": 1}, "probes": {"hessian": {"every": 0}}}
    assert unknown_key(tree, "trian.stpes") == \
        "unknown key trian.stpes; did you mean train.steps?"
    assert unknown_key(tree, "model.lr") == "unknown key model.lr; did you mean optimizer.lr?"
    assert unknown_key(tree, "train.hessian.every") == \
        "unknown key train.hessian.every; did you mean probes.hessian.every?"
    assert unknown_key(tree, "train.steps.max") == \
        "unknown key train.steps.max; train.steps is a value, not a section"
    assert unknown_key(tree, "model.kernel") == \
        "unknown key model.kernel; valid keys of model: depth, width"
    assert unknown_key(tree, "colour") == \
        "unknown key colour; valid top-level keys: model, optimizer, probes, train"


def test_help_says_what_actlab_train_does_with_its_groups_and_examples():
    p = cli("--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("actlab-train trains neural networks")
    assert "powered by Hydra" not in out and "\ntrain:\n" not in out  # no config dump
    assert "outputs/DATE/TIME" in out and "multirun/DATE/TIME" in out
    groups = out.split("== Config groups")[1].split("== Examples ==")[0]
    for group in ("activation", "model", "dataset", "optimizer", "init", "logger"):
        line = next(x for x in groups.splitlines() if x.startswith(f"{group}: "))
        assert line.split(": ")[1].split(", ") == _group_options(group)
    examples = [x for x in out.split("== Examples ==")[1].splitlines() if x.startswith("actlab-")]
    for example in ("actlab-train activation=gelu model.depth=8 train.seeds=4",
                    "actlab-train model.activations=[tanh,relu,relu,relu]",
                    "actlab-train -m activation=relu,tanh,gelu model.depth=2,8,32",
                    "actlab-train train.checkpoint_every=500 hydra.run.dir=outputs/long",
                    "actlab-report multirun/DATE/TIME"):
        assert any(x.startswith(example) for x in examples), example
    assert f"Documentation in {readme()}" in out
    p = cli("--hydra-help")
    assert p.returncode == 0 and p.stdout.startswith("Hydra (1.3")


@pytest.mark.parametrize("main,name,example", [
    (report_main, "actlab-report", "actlab-report multirun/d"),
    (activations_main, "actlab-activations", "actlab-activations --plot acts.png"),
])
def test_report_and_activations_help(capsys, main, name, example):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name}")
    assert example in out and f"documentation: {readme()}" in out
