"""Sweeps and scale-out: W&B offline history, launchers, resumable multiruns, Optuna, devices."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actlab.cli import config_dir, quote_targets
from actlab.runs import driver as train
from conftest import make_config, read_records
from test_cli import EXE, cli, composed


def wandb_history(path: Path) -> list[dict]:
    """History rows of an offline .wandb file (LevelDB-log framing of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, chunks = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        body = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            chunks.append(body)
        elif kind == 2:  # first
            buf = body
        elif kind == 3:  # middle
            buf += body
        elif kind == 4:  # last
            chunks.append(buf + body)
    rows = []
    for c in chunks:
        r = pb.Record()
        r.ParseFromString(c)
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in r.history.item})
    return rows


def test_wandb_offline_runs_hold_the_per_layer_history(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no stored credentials
    cfg = make_config(train={"seeds": 2}, logger={"sinks": ["local", "wandb"]})
    train.run(cfg, tmp_path / "run")
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one W&B run per member
    local = read_records(tmp_path / "run")
    seeds_seen = set()
    for run in runs:
        hist = wandb_history(next(run.glob("*.wandb")))
        assert [h["_step"] for h in hist] == [0, 5, 10, 15, 20]
        seed = next(r["seed"] for r in local if r["grad_norm/1"] == hist[1]["grad_norm/1"])
        seeds_seen.add(seed)
        mine = [r for r in local if r["seed"] == seed]
        for h, r in zip(hist, mine, strict=True):
            for k in ("grad_norm/0", "dead_frac/1", "delta_norm/1", "train/loss", "act_std/0"):
                assert h[k] == pytest.approx(r[k]), k
    assert seeds_seen == {0, 1}


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # 15-25 s of subprocesses: run after the suite (-m slow)
def test_joblib_multirun_of_four_jobs_and_sweep_summary(tmp_path):
    p = cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "activation=relu,tanh",
            "model.depth=1,2", "+experiment=debug", "train.seeds=2", "logger.progress=false",
            f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    for j in range(4):
        assert json.loads((tmp_path / str(j) / "summary.json").read_text())["status"] == \
            "completed"
    rows = read_csv(tmp_path / "sweep_summary.csv")
    assert len(rows) == 8  # 4 jobs x 2 seeds
    assert {(r["activation"], r["depth"], r["seed"]) for r in rows} == {
        (a, d, s) for a in ("relu", "tanh") for d in ("1", "2") for s in ("0", "1")}


@pytest.mark.slow  # 15-25 s of subprocesses: run after the suite (-m slow)
def test_submitit_local_multirun_of_two_jobs(tmp_path):
    p = cli("-m", "hydra/launcher=submitit_local", "activation=relu,gelu", "+experiment=debug",
            "logger.progress=false", f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    for j in range(2):
        assert json.loads((tmp_path / str(j) / "summary.json").read_text())["status"] == \
            "completed"


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_killed_multirun_rerun_skips_completed_jobs(tmp_path):
    args = ["-m", "activation=relu,tanh,gelu", "+experiment=debug", "train.steps=400",
            "train.log_every=20", "train.checkpoint_every=100", "logger.progress=false",
            f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen([EXE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import time

    done = tmp_path / "0" / "summary.json"
    while proc.poll() is None:  # kill once the first job has completed
        if done.exists() and json.loads(done.read_text()).get("status") == "completed":
            proc.kill()
            break
        time.sleep(0.01)
    proc.wait()
    first = (tmp_path / "0" / "metrics.jsonl").stat().st_mtime_ns
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert "already completed, skipped" in p.stdout
    assert (tmp_path / "0" / "metrics.jsonl").stat().st_mtime_ns == first  # not retrained
    rows = read_csv(tmp_path / "sweep_summary.csv")
    assert [r["status"] for r in rows] == ["completed"] * 3
    for j in range(3):
        steps = [r["step"] for r in read_records(tmp_path / str(j))]
        assert steps == list(range(0, 400, 20)) + [400]


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_a_failing_job_does_not_stop_the_others(tmp_path):
    # a cnn needs image or sequence inputs: known only once the job loads the spiral
    p = cli("-m", "model=mlp,cnn,mlp", "model.depth=2", "train.steps=20", "train.log_every=5",
            "train.eval_every=10", "train.probe_size=64", "logger.progress=false",
            f"hydra.sweep.dir={tmp_path}")
    assert p.returncode != 0
    status = [json.loads((tmp_path / str(j) / "summary.json").read_text())["status"]
              for j in range(3)]
    assert status == ["completed", "failed", "completed"]
    rows = read_csv(tmp_path / "sweep_summary.csv")
    assert [r["status"] for r in rows] == ["completed", "failed", "completed"]
    assert "needs sequence or image inputs" in rows[1]["error"]
    assert [r["step"] for r in read_records(tmp_path / "1")] == []  # it never trained
    assert [r["step"] for r in read_records(tmp_path / "2") if r["seed"] == 0] == [
        0, 5, 10, 15, 20]


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_optuna_sweep_of_a_few_trials(tmp_path):
    p = cli("-m", "+hparams_search=lr_depth", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
            "train.steps=20", "train.seeds=1", "logger.progress=false",
            f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    res = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    accs = [json.loads((tmp_path / str(j) / "summary.json").read_text())["aggregate"][
        "final_eval_acc"]["mean"] for j in range(3)]
    assert res["best_value"] == pytest.approx(max(accs))
    assert res["best_trial"] == accs.index(max(accs))
    import optuna  # the study is kept in the sweep directory, trial number == job number

    study = optuna.load_study(study_name="lr_depth", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.value for t in study.trials] == pytest.approx(accs)
    for t in study.trials:
        cfg = json.loads((tmp_path / str(t.number) / "summary.json").read_text())["config"]
        assert cfg["optimizer"]["lr"] == pytest.approx(t.params["optimizer.lr"])
        assert 1e-4 <= t.params["optimizer.lr"] <= 1e-1 and t.params["model.depth"] in (2, 4, 8)
    rows = read_csv(tmp_path / "sweep_summary.csv")
    assert [r["status"] for r in rows] == ["completed"] * 3


@pytest.mark.parametrize("name", ["grid", "random", "bayes"])
def test_wandb_sweep_files_give_valid_hydra_overrides(name):
    spec = yaml.safe_load((config_dir() / "sweep" / f"{name}.yaml").read_text())
    assert spec["program"] == "actlab-train" and "${args_no_hyphens}" in spec["command"]
    extra = quote_targets([a for a in spec["command"][1:] if not a.startswith("${")])
    for key, p in spec["parameters"].items():
        values = p.get("values") or [p["min"], p["max"]]
        for v in values:
            cfg = composed(f"{key}={v}", *extra).to_dict()
            section, _, name = key.partition(".")
            expected = pytest.approx(v) if isinstance(v, float) else v
            assert cfg[section][name or "name"] == expected, (key, v)
            assert cfg["train"]["seeds"] == 4 and "wandb" in cfg["logger"]["sinks"]
    assert spec["metric"]["name"] in ("final_eval_acc", "steps_to_target")


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_four_cpu_devices_shard_the_members_and_match_one_device(tmp_path):
    script = (
        "import sys; sys.path.insert(0, {tests!r})\n"
        "from conftest import make_config\n"
        "from actlab import train\n"
        "s = train.run(make_config(train={{'seeds': 4}}), {out!r})\n"
        "print('DEVICES', s['devices'])\n"
    ).format(tests=str(Path(__file__).parent), out=str(tmp_path / "four"))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "DEVICES 4" in p.stdout
    train.run(make_config(train={"seeds": 4}), tmp_path / "one")
    four, one = read_records(tmp_path / "four"), read_records(tmp_path / "one")
    assert len(four) == len(one) == 20
    for a, b in zip(four, one, strict=True):
        for k, v in b.items():
            if k != "wall_time" and isinstance(v, float):
                assert a[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


