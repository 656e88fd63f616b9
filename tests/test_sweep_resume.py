"""Sweeps that resume: a killed Optuna study finished by the same command, grids that keep their
job numbers, refused redefinitions, fail-fast, and the status column of sweep_summary.csv."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from actlab.analysis import write_sweep_summary
from actlab.runs.sweeps import SWEEP_FILE, write_definition
from test_cli import EXE, cli

TINY = ["train.steps=10", "train.log_every=5", "train.eval_every=10", "train.probe_size=64",
        "model.width=8", "dataset=xor", "logger.progress=false"]


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def job_dirs(sweep_dir: Path) -> list[int]:
    return sorted(int(d.name) for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit())


def trial_states(db: Path) -> dict[str, int]:
    try:
        con = sqlite3.connect(db)
        try:
            rows = con.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # not created yet
        return {}
    return dict(rows)


@pytest.mark.slow  # 15-25 s of subprocesses: run after the suite (-m slow)
def test_killed_optuna_study_is_finished_by_the_same_command(tmp_path):
    args = ["-m", "+hparams_search=lr_depth", "hydra.sweeper.n_trials=4", "train.seeds=1", *TINY,
            f"hydra.sweep.dir={tmp_path}"]
    db = tmp_path / "optuna.db"
    proc = subprocess.Popen([EXE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = tmp_path / "2" / ".hydra" / "overrides.yaml"
    try:  # kill it while trial 2 runs as job 2, after two trials completed
        while proc.poll() is None:
            states = trial_states(db)
            if states.get("COMPLETE", 0) >= 2 and states.get("RUNNING", 0) >= 1 and \
                    started.exists() and started.stat().st_size > 0:
                proc.kill()
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert trial_states(db) == {"COMPLETE": 2, "RUNNING": 1}
    first_try = yaml.safe_load(started.read_text())

    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert "Resuming 1 trial(s) left running: [2]" in p.stdout + p.stderr
    import optuna

    study = optuna.load_study(study_name="lr_depth", storage=f"sqlite:///{db}")
    assert [(t.number, t.state.name) for t in study.trials] == [
        (n, "COMPLETE") for n in range(4)]
    assert job_dirs(tmp_path) == [0, 1, 2, 3]  # trial number == job number, each once
    assert yaml.safe_load(started.read_text()) == first_try  # the same trial, resumed
    for t in study.trials:
        s = json.loads((tmp_path / str(t.number) / "summary.json").read_text())
        assert s["status"] == "completed"
        assert s["config"]["optimizer"]["lr"] == pytest.approx(t.params["optimizer.lr"])
        assert s["config"]["model"]["depth"] == t.params["model.depth"]
        assert t.value == pytest.approx(s["aggregate"]["final_eval_acc"]["mean"])
    res = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert res["best_value"] == pytest.approx(max(t.value for t in study.trials))
    assert res["best_trial"] == study.best_trial.number and res["trials"]["complete"] == 4
    assert f"Best value: {res['best_value']}" in p.stdout

    p = cli(*args)  # finished: nothing more to run
    assert p.returncode == 0, p.stderr
    assert "run directory" not in p.stdout and len(study.trials) == 4


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_changed_grid_is_refused_and_the_same_grid_keeps_its_job_numbers(tmp_path):
    sweep = [f"hydra.sweep.dir={tmp_path}", *TINY, "model.depth=1"]
    p = cli("-m", "activation=relu,tanh", *sweep)
    assert p.returncode == 0, p.stderr
    recorded = (tmp_path / SWEEP_FILE).read_text()
    stamps = [(tmp_path / str(j) / "metrics.jsonl").stat().st_mtime_ns for j in (0, 1)]

    p = cli("-m", "activation=relu,gelu", *sweep)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        f"actlab-train: error: sweep dir {tmp_path} was launched with activation=relu,tanh; "
        f"this command has activation=relu,gelu")
    assert "run directory" not in p.stdout and job_dirs(tmp_path) == [0, 1]

    p = cli("-m", *sweep, "activation=tanh,relu")  # the same jobs, written in another order
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("already completed, skipped") == 2
    assert [(tmp_path / str(j) / "metrics.jsonl").stat().st_mtime_ns for j in (0, 1)] == stamps
    assert (tmp_path / SWEEP_FILE).read_text() == recorded and job_dirs(tmp_path) == [0, 1]
    rows = read_csv(tmp_path / "sweep_summary.csv")
    assert [(r["activation"], r["status"]) for r in rows] == [("relu", "completed"),
                                                             ("tanh", "completed")]


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_fail_fast_stops_launching_after_the_first_failed_job(tmp_path):
    # a cnn needs image or sequence inputs: known only once the job loads the dataset
    p = cli("-m", "activation=relu,tanh", "model=mlp,cnn", "model.depth=1",
            "hydra.sweeper.fail_fast=true", "train.steps=10", "train.log_every=5",
            "train.probe_size=64", "dataset=xor", "logger.progress=false",
            f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 1
    assert "actlab-train: fail_fast: job 1 failed; 2 of 4 jobs not launched" in p.stderr
    assert job_dirs(tmp_path) == [0, 1]
    rows = read_csv(tmp_path / "sweep_summary.csv")
    assert [r["status"] for r in rows] == ["completed", "failed", "never started",
                                           "never started"]
    assert rows[2]["run"] == str(tmp_path / "2")
    assert rows[3]["overrides"].split()[:2] == ["activation=tanh", "model=cnn"]


def _summary(status: str, diverged: list[int | None]) -> dict:
    return {"config": {"activation": {"name": "relu"}, "model": {"name": "mlp", "depth": 2}},
            "status": status, "seeds": [{"seed": i, "final_eval_acc": 0.5, "diverged_at": d}
                                        for i, d in enumerate(diverged)]}


def test_sweep_summary_status_of_every_job(tmp_path):
    jobs = [["activation=relu", f"train.seed={i}"] for i in range(5)]
    write_definition(tmp_path, {"sweeper": "grid", "overrides": {},
                                "jobs": [{"num": i, "dir": str(i), "overrides": o}
                                         for i, o in enumerate(jobs)]})
    for i, (status, div) in enumerate([("completed", [None, 30]), ("diverged", [10, 20]),
                                       ("failed", None), ("running", None)]):
        d = tmp_path / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "config.yaml").write_text("activation: {name: relu}\n")
        (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(jobs[i]))
        if status == "failed":
            (d / "summary.json").write_text(json.dumps(
                {"config": {}, "status": "failed", "error": "boom", "seeds": []}))
        elif status != "running":  # a job killed before its first summary has none
            (d / "summary.json").write_text(json.dumps(_summary(status, div)))
    rows = read_csv(write_sweep_summary(tmp_path))
    assert [(r["run"][len(str(tmp_path)) + 1:], r["status"]) for r in rows] == [
        ("0", "completed"), ("0", "completed"), ("1", "diverged"), ("1", "diverged"),
        ("2", "failed"), ("3", "running"), ("4", "never started")]
    assert rows[4]["error"] == "boom" and rows[6]["overrides"] == "activation=relu train.seed=4"
