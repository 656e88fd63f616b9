"""actlab-train end to end: the run directory contract, sweeps, config groups, user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab import activations, train
from actlab.cli import config_dir
from actlab.config import Config, ConfigError

EXE = str(Path(sys.executable).parent / "actlab-train")
PER_LAYER = ("grad_norm", "weight_norm", "update_ratio", "delta_norm", "act_mean", "act_std",
             "dead_frac", "sat_frac")


def cli(*args, timeout=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def composed(*overrides) -> Config:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    d = OmegaConf.to_container(cfg, resolve=True)
    return Config.from_dict(d)


def test_run_directory_contract(tmp_path):
    out = tmp_path / "run"
    p = cli("train.seeds=4", "model.depth=6", "train.steps=100", "train.log_every=50",
            "train.eval_every=50", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    assert f"run directory: {out}" in p.stdout
    recs = read_jsonl(out / "metrics.jsonl")
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
    for key in train.PER_MEMBER_SUMMARY:
        assert key in s["seeds"][0] and key in s["aggregate"]
    hydra_cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    assert hydra_cfg["model"]["depth"] == 6


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
        assert f"grad_norm/{depth - 1}" in read_jsonl(job / "metrics.jsonl")[0]
    assert combos == {("relu", 2), ("relu", 4), ("tanh", 2), ("tanh", 4)}


@pytest.mark.parametrize("args,message", [
    (["activation=relux"], "unknown activation 'relux'; choose from: celu, elu, gelu"),
    (["dataset=mnistt"], "unknown dataset 'mnistt'; choose from: cifar10, cifar100, circle"),
    (["model=resnet9000"], "unknown model 'resnet9000'; choose from: cnn, mlp, recommender"),
    (["model=cnn"], "model 'cnn' needs sequence or image inputs"),
    (["model=recommender", "dataset=digits"], "model 'recommender' needs a ratings dataset"),
    (["dataset=mnist", "dataset.data_dir=/nonexistent"], "tfds build mnist"),
    (["model.dropout=1.0"], "model.dropout must be in [0, 1), got 1.0"),
    (["model.depth=0"], "model.depth must be >= 1, got 0"),
    (["model.width=0"], "model.width must be >= 1, got 0"),
    (["model.depth=abc"], "model.depth must be an integer, got 'abc'"),
    (["optimizer.lr=-1"], "optimizer.lr must be > 0, got -1"),
    (["train.target=accuracy"], "train.target 'accuracy' is not of the form"),
    (["activation.name=nope"], "unknown activation 'nope'; known: celu"),
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
        cfg = composed(f"{group}={option}")
        assert cfg is not None


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


def test_every_hidden_activation_has_a_config_and_trains_through_hydra(tmp_path):
    assert _group_options("activation") == activations.names(include_output=False)
    for name in activations.names(include_output=False):
        cfg = composed(f"activation={name}", "+experiment=debug", "train.steps=2",
                       "train.log_every=1", "train.eval_every=2", "logger=none")
        s = train.run(cfg, tmp_path / name)
        assert s["status"] == "completed", name


OFFLINE_MODEL = {"ratings": "model=recommender", "digits": "model=cnn",
                 "mnist1d": "model=mlp"}
TFDS = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn_cropped")


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
