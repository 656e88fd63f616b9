"""Reliability: kill -9 and resume, determinism, corrupted checkpoints, bad input, fuzzing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import hypothesis
import hypothesis.strategies as st
import pytest
import yaml

from actlab.config import Config
from actlab.engine.resolve import resolve
from actlab.files import read_metrics
from actlab.runs import checkpoint
from actlab.runs import driver as train
from conftest import make_config
from test_cli import EXE, cli

KILL_RUN = ["model.depth=3", "model.width=32", "train.seeds=3", "train.steps=3000",
            "train.log_every=10", "train.eval_every=100", "train.checkpoint_every=50",
            "train.checkpoint_keep=3", "probes.hessian.every=500", "logger.progress=false"]


def without_wall(records):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def start(run_dir: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([EXE, *KILL_RUN, *extra, f"hydra.run.dir={run_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def kill_when(p: subprocess.Popen, run_dir: Path, min_lines: int, during_save: bool) -> bool:
    """SIGKILL `p` once metrics.jsonl has `min_lines` lines (or, with during_save, as soon
    as an orbax temporary directory appears after that). False if it finished first."""
    metrics, ckpts = run_dir / "metrics.jsonl", run_dir / "checkpoints"
    while p.poll() is None:
        n = metrics.read_bytes().count(b"\n") if metrics.exists() else 0
        saving = ckpts.is_dir() and any(not q.name.isdigit() for q in ckpts.iterdir())
        if n >= min_lines and (not during_save or saving):
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.002)
    return False


@pytest.mark.slow  # about 40 s: run after the suite (-m slow)
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    run_dir = tmp_path / "killed"
    rng = random.Random(7)
    total = (3000 // 10 + 1) * 3
    kills = 0
    for during_save in (False, True, False):
        p = start(run_dir)
        if kill_when(p, run_dir, rng.randrange(30, total - 30), during_save):
            kills += 1
            # whatever the moment, what is on disk is readable and says "running"
            summary_path = run_dir / "summary.json"
            if summary_path.exists():
                assert json.loads(summary_path.read_text())["status"] == "running"
            read_metrics(run_dir / "metrics.jsonl")
        else:
            assert p.returncode == 0, p.stderr.read().decode()
    assert kills >= 2
    # a torn line as a kill mid-write would leave it
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 99999, "seed": 0, "train/lo')
    p = start(run_dir, "train.resume=true")
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    got = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(line.endswith("}") for line in got)
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["status"] == "completed" and "resumed_from" in resumed

    stored = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    cfg = resolve(Config.from_dict(stored))
    ref = train.run(cfg, tmp_path / "ref", progress=False)
    a = without_wall(json.loads(line) for line in got)
    b = without_wall(read_metrics(tmp_path / "ref" / "metrics.jsonl")[0])
    keys = [(r["step"], r["seed"]) for r in a]
    assert len(keys) == len(set(keys)) == total  # one record per (step, seed), none missing
    assert a == b  # bitwise: floats compared exactly
    for x, y in zip(resumed["seeds"], ref["seeds"], strict=True):
        for k in ("final_train_loss", "final_eval_acc", "best_eval_acc", "loss_auc",
                  "steps_to_target", "diverged_at"):
            assert x[k] == y[k], k


def test_same_config_and_seed_are_bitwise_identical(tmp_path):
    cfg = make_config(model={"depth": 3, "width": 16}, train={"seeds": 2, "steps": 30},
                      probes={"noise_scale": {"every": 10}})
    train.run(cfg, tmp_path / "a")
    train.run(cfg, tmp_path / "b")
    a = without_wall(read_metrics(tmp_path / "a" / "metrics.jsonl")[0])
    b = without_wall(read_metrics(tmp_path / "b" / "metrics.jsonl")[0])
    assert len(a) == 14 and a == b


def test_resuming_a_completed_run_does_not_retrain(tmp_path):
    cfg = make_config(train={"checkpoint_every": 10})
    first = train.run(cfg, tmp_path)
    mtime = (tmp_path / "metrics.jsonl").stat().st_mtime_ns
    again = train.run(cfg, tmp_path)
    assert again["status"] == "completed" and again["seeds"] == first["seeds"]
    assert (tmp_path / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_a_directory_of_another_configuration_is_refused(tmp_path):
    train.run(make_config(), tmp_path)
    with pytest.raises(train.RunDirError, match="different configuration"):
        train.run(make_config(activation={"name": "tanh"}), tmp_path)
    fresh = train.run(make_config(activation={"name": "tanh"}, train={"resume": False}),
                      tmp_path)
    assert fresh["status"] == "completed"
    assert {r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")[0]} == {0, 5, 10, 15, 20}


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_corrupted_checkpoint_gives_a_clear_error_and_a_fresh_start_works(tmp_path):
    run = tmp_path / "run"
    args = ["+experiment=debug", "train.steps=40", "train.log_every=10",
            "train.checkpoint_every=20", f"hydra.run.dir={run}"]
    assert cli(*args).returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "running"  # as if killed after the last checkpoint
    (run / "summary.json").write_text(json.dumps(summary))
    step = checkpoint.latest_step(run)
    for f in (run / "checkpoints" / str(step)).rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage" * 3)
    p = cli(*args, "train.resume=true")
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "cannot be restored" in err and "train.resume=false" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    p = cli(*args, "train.resume=false")
    assert p.returncode == 0, p.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("args,message", [
    (["train.seeds=0"], "train.seeds must be >= 1, got 0"),
    (["train.resume=maybe"], "train.resume must be true, false or auto"),
    (["train.checkpoint_every=-5"], "train.checkpoint_every must be >= 0"),
    (["probes.hessian.every=x"], "probes.hessian.every must be an integer"),
])
def test_more_user_errors_are_one_line(tmp_path, args, message):
    p = cli(*args, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2 and message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = cli("+experiment=debug", f"hydra.run.dir={blocker}/run")
    assert p.returncode == 2 and "not a directory" in p.stderr
    assert "Traceback" not in p.stderr
    with pytest.raises(train.RunDirError, match="cannot write"):
        train.run(make_config(), blocker / "run")


# --------------------------------------------------------------------------- #
# Fuzzing: random override combinations through the same path as the CLI.


OVERRIDES = {
    "activation": st.sampled_from(["relu", "tanh", "gelu", "prelu", "selu", "hard_sigmoid",
                                   "nope"]),
    "model": st.sampled_from(["mlp", "cnn", "recommender", "transformer"]),
    "dataset": st.sampled_from(["spiral", "digits", "mnist1d", "ratings", "mnist"]),
    "model.depth": st.sampled_from(["1", "3", "0", "abc"]),
    "optimizer.lr": st.sampled_from(["1e-3", "10", "-1", "1e9"]),
    "train.seeds": st.sampled_from(["1", "2", "0"]),
    "train.batch_size": st.sampled_from(["8", "100000", "0"]),
    "model.dropout": st.sampled_from(["0.0", "0.5", "1.0"]),
    "init": st.sampled_from(["he", "glorot", "auto"]),
}


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(st.fixed_dictionaries({}, optional=OVERRIDES))
def test_fuzzed_overrides_complete_or_fail_cleanly(tmp_path_factory, chosen):
    from actlab.cli import run_job

    overrides = [f"{k}={v}" for k, v in chosen.items()]
    if chosen.get("model") not in (None, "mlp"):
        overrides = [o for o in overrides if not o.startswith(("model.depth", "model.dropout"))]
    overrides += ["train.steps=3", "train.log_every=1", "train.eval_every=2",
                  "logger.progress=false", "dataset.data_dir=/nonexistent"
                  if chosen.get("dataset") == "mnist" else "train.probe_size=32"]
    run_dir = tmp_path_factory.mktemp("fuzz")
    try:
        cfg = composed_dict(*overrides)
    except Exception as e:  # Hydra's own composition errors are reported by Hydra
        assert "Could not" in str(e) or "override" in str(e).lower(), e
        return
    try:
        summary = run_job(cfg, run_dir)
    except SystemExit as e:  # the CLI's clean failure: exit code 2, one-line message
        assert e.code == 2
        return
    assert summary["status"] in ("completed", "diverged")
    assert (run_dir / "summary.json").exists()


def composed_dict(*overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from actlab.cli import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)



def test_non_finite_values_in_a_user_dataset_are_counted_at_load_time():
    import numpy as np

    from actlab import data

    @data.register("user_with_nans")
    def _load():
        x = np.ones((10, 2), np.float32)
        x[1, 0], x[3, 1], x[4, 0] = np.nan, np.inf, -np.inf
        return data.Dataset(name="user_with_nans", x_train=x, y_train=np.zeros(10, np.int32),
                            x_test=x[:2].copy() * 0, y_test=np.zeros(2, np.int32),
                            num_classes=2, mean=np.zeros(2, np.float32),
                            std=np.ones(2, np.float32))

    with pytest.raises(data.DataError, match="has 3 non-finite input values in its train split"):
        data.load("user_with_nans")
