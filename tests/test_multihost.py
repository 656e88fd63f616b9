"""Two processes on 127.0.0.1 (JAX's distributed runtime, gloo CPU collectives) train one
run together; process 0 alone writes; the records equal a one-process run's. With one
member each batch is split across the processes' devices; with two, the members are (and
the checkpoints gather them whole). A two-process run interrupted on both processes after a
checkpoint resumes from it, with both processes, to the records of an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import read_records

TIMEOUT = 300  # seconds for one launch, all its processes together; a hang fails the test

# Steps 0..60 logged every 10, one log step per call: calls [0] [10] [20] ckpt30:[30] [40]
# [50] ckpt60:[60]. Stopped before its 6th call, a run has saved checkpoint 30 and written
# the records of steps 0..30; resumed, it drops step 30's and goes on from checkpoint 30.
STEPS, LOG_EVERY, CHECKPOINT_EVERY, INTERRUPT_AFTER_CALLS = 60, 10, 30, 5
LOG_STEPS = list(range(0, STEPS + 1, LOG_EVERY))

# One process of a run; argv[1]: JSON {tests, run_dir, shard, seeds, steps, log_every,
# checkpoint_every, interrupt_after (program calls before every process raises; 0: never),
# slow_replay (seconds the processes other than 0 wait before replaying kept records)}.
SCRIPT = r"""
import json, os, sys, time, types
o = json.loads(sys.argv[1])
sys.path.insert(0, o["tests"])
from conftest import make_config
from actlab import program, rundir, train


class Interrupted(Exception):
    pass


def interrupting(make, after):
    # make_program whose compiled program raises when called for the (after+1)-th time
    calls = []

    def compile_(lowered):
        compiled = lowered.compile()

        def call(*a):
            calls.append(None)
            if len(calls) > after:
                raise Interrupted(f"interrupted before program call {len(calls)}")
            return compiled(*a)
        return call

    def make_program(*a, **kw):
        lower = make(*a, **kw).lower
        return types.SimpleNamespace(lower=lambda *la, **lk: types.SimpleNamespace(
            compile=lambda: compile_(lower(*la, **lk))))
    return make_program


def delayed(f, seconds):
    def g(*a, **kw):
        time.sleep(seconds)
        return f(*a, **kw)
    return g


if o["interrupt_after"]:
    program.make_program = interrupting(program.make_program, o["interrupt_after"])
if o["slow_replay"] and os.environ.get("ACTLAB_PROCESS_ID", "0") != "0":
    rundir.refeed_records = delayed(rundir.refeed_records, o["slow_replay"])
cfg = make_config(dataset={"name": "digits"}, optimizer={"name": "adam", "lr": 3e-3},
                  train={"steps": o["steps"], "log_every": o["log_every"],
                         "eval_every": o["log_every"], "batch_size": 32, "probe_size": 64,
                         "seeds": o["seeds"], "checkpoint_every": o["checkpoint_every"],
                         "log_steps_per_call": 1, "shard": o["shard"]})
try:
    s = train.run(cfg, o["run_dir"])
except Interrupted as e:
    s = {"status": f"interrupted: {e}"}
print("RESULT" + json.dumps({k: s.get(k) for k in ("devices", "mesh", "status",
                                                   "resumed_from")}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, run_dir: Path, seeds: int = 2, interrupt_after: int = 0,
           slow_replay: float = 0.0) -> list[dict]:
    """Run SCRIPT in `run_dir` as one run of `processes` processes (2+: joined through a
    coordinator on 127.0.0.1, train.shard=auto; 1: alone, train.shard=none); each process's
    RESULT, in process order. Fails the test if a process fails, or kills them all and fails
    it if the launch takes over TIMEOUT seconds."""
    opts = {"tests": str(Path(__file__).parent), "run_dir": str(run_dir),
            "shard": "auto" if processes > 1 else "none", "seeds": seeds, "steps": STEPS,
            "log_every": LOG_EVERY, "checkpoint_every": CHECKPOINT_EVERY,
            "interrupt_after": interrupt_after, "slow_replay": slow_replay}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTLAB_")}
    if processes > 1:
        env |= {"ACTLAB_COORDINATOR": f"127.0.0.1:{_free_port()}",
                "ACTLAB_NUM_PROCESSES": str(processes)}
    envs = [env] if processes == 1 else [
        {**env, "ACTLAB_PROCESS_ID": str(i)} for i in range(processes)]
    logs = [tempfile.TemporaryFile("w+") for _ in envs]  # files: no pipe can fill up
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(opts)], env=e,
                              stdout=log, stderr=subprocess.STDOUT, text=True)
             for e, log in zip(envs, logs, strict=True)]
    deadline = time.monotonic() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.wait()
    results = []
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        log.seek(0)
        out = log.read()
        log.close()
        line = next((x for x in out.splitlines() if x.startswith("RESULT")), None)
        assert p.returncode == 0 and line is not None, (
            f"process {i} of {processes} in {run_dir} ended with {p.returncode} (negative: "
            f"killed after {TIMEOUT} s):\n{out[-3000:]}")
        results.append(json.loads(line[len("RESULT"):]))
    return results


def assert_same_records(a: list[dict], b: list[dict]) -> None:
    """Two runs' records, in order, with equal keys and numbers (rel 1e-4)."""
    assert [(r["step"], r["seed"]) for r in a] == [(r["step"], r["seed"]) for r in b]
    compared = 0
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            if k == "wall_time" or not isinstance(v, float) or not math.isfinite(v):
                continue
            assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (k, ra["step"], ra["seed"])
            compared += 1
    assert compared > 10 * len(a)


def checkpoint_files(run_dir: Path) -> dict[str, list[str]]:
    """Each entry of <run dir>/checkpoints: the paths of the files under it."""
    root = run_dir / "checkpoints"
    return {d.name: sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file())
            for d in sorted(root.iterdir())}


def assert_written_once(run_dir: Path, steps: list[int]) -> None:
    """Complete checkpoints at `steps` only (no temporary directories), each written by
    process 0 alone (no other process's copy of the arrays)."""
    saved = checkpoint_files(run_dir)
    assert list(saved) == [str(s) for s in steps], saved
    for files in saved.values():
        assert "commit_success.txt" in files
        assert not [f for f in files if "process_" in f and "process_0" not in f], files


@pytest.fixture(scope="module")
def one(tmp_path_factory) -> Path:
    """The run directory of an uninterrupted one-process run of two members (seed 0's
    records are those of a one-member run too: members are independent)."""
    run_dir = tmp_path_factory.mktemp("one")
    [r] = launch(1, run_dir)
    assert r == {"devices": 1, "mesh": {}, "status": "completed", "resumed_from": None}
    return run_dir


@pytest.mark.slow  # 15-25 s of subprocesses: run after the suite (-m slow)
def test_two_process_run_equals_one_process_run(one, tmp_path):
    for r in launch(2, tmp_path, seeds=1):  # auto becomes batch: batches over 2 processes
        assert r == {"devices": 2, "mesh": {"members": 1, "data": 2}, "status": "completed",
                     "resumed_from": None}
    a = [r for r in read_records(one) if r["seed"] == 0]
    b = read_records(tmp_path)  # process 1 wrote nothing: no duplicate records
    assert [r["step"] for r in b] == LOG_STEPS
    assert_same_records(a, b)
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"
    assert_written_once(tmp_path, [CHECKPOINT_EVERY, STEPS])


@pytest.mark.slow  # about 40 s: run after the suite (-m slow)
def test_interrupted_two_process_run_resumes_from_its_checkpoint(one, tmp_path):
    # two members, one on each process; both processes raise before the program call after
    # checkpoint 30's (as a run killed there would stop, but with its summary written)
    for r in launch(2, tmp_path, interrupt_after=INTERRUPT_AFTER_CALLS):
        assert r["status"] == f"interrupted: interrupted before program call " \
                              f"{INTERRUPT_AFTER_CALLS + 1}"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"
    # records of steps after the checkpoint, which the resumed run must drop
    assert sorted({r["step"] for r in read_records(tmp_path)}) == [0, 10, 20, CHECKPOINT_EVERY]
    assert_written_once(tmp_path, [CHECKPOINT_EVERY])

    # the same command again; process 1 replays the kept records 2 s after process 0 (a
    # slow process): were it to rewrite metrics.jsonl too, it would replace the file process
    # 0 has opened for appending, and the records after the resume would be lost
    for r in launch(2, tmp_path, slow_replay=2.0):
        assert r == {"devices": 2, "mesh": {"members": 2, "data": 1}, "status": "completed",
                     "resumed_from": CHECKPOINT_EVERY}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == CHECKPOINT_EVERY
    assert_written_once(tmp_path, [CHECKPOINT_EVERY, STEPS])
    a, b = read_records(one), read_records(tmp_path)
    keys = [(r["step"], r["seed"]) for r in b]
    assert len(keys) == len(set(keys)) == 2 * len(LOG_STEPS)  # one per (step, member)
    assert_same_records(a, b)
