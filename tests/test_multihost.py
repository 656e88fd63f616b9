"""Two processes on 127.0.0.1 (JAX's distributed runtime, gloo CPU collectives) train one
run together: each batch split across the processes' devices; process 0 alone writes; the
records equal a one-process run's."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_records

SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from conftest import make_config
from actlab import train
cfg = make_config(dataset={"name": "digits"}, optimizer={"name": "adam", "lr": 3e-3},
                  train={"steps": 20, "log_every": 10, "eval_every": 10, "batch_size": 32,
                         "probe_size": 64, "shard": sys.argv[3]})
s = train.run(cfg, sys.argv[2])
print("RESULT" + json.dumps({"devices": s["devices"], "mesh": s["mesh"],
                             "status": s["status"]}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _result(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(x for x in p.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tests = str(Path(__file__).parent)
    one = tmp_path_factory.mktemp("one")
    single = subprocess.run([sys.executable, "-c", SCRIPT, tests, str(one), "none"],
                            capture_output=True, text=True, timeout=600)
    two = tmp_path_factory.mktemp("two")
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-c", SCRIPT, tests, str(two), "auto"],
        env={**os.environ, "ACTLAB_COORDINATOR": f"127.0.0.1:{port}",
             "ACTLAB_NUM_PROCESSES": "2", "ACTLAB_PROCESS_ID": str(i)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    results = [_result(subprocess.CompletedProcess(p.args, p.returncode, o, e))
               for p, (o, e) in zip(procs, outs, strict=True)]
    return _result(single), one, results, two


def test_two_process_run_equals_one_process_run(runs):
    single, one, results, two = runs
    assert single["devices"] == 1
    for r in results:  # auto becomes batch: one member, its batches split over 2 processes
        assert r == {"devices": 2, "mesh": {"members": 1, "data": 2}, "status": "completed"}
    a, b = read_records(one), read_records(two)
    assert len(a) == len(b) == 3  # process 1 wrote nothing: no duplicate records
    compared = 0
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for k, v in ra.items():
            if k == "wall_time" or not isinstance(v, float) or not math.isfinite(v):
                continue
            assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (k, ra["step"])
            compared += 1
    assert compared > 30
    assert json.loads((two / "summary.json").read_text())["status"] == "completed"
