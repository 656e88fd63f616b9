"""train.shard=batch on 4 host CPU devices: the same records as one device, batches split.

JAX fixes the device count when it starts, so the runs happen in a subprocess started
with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys, tempfile
import jax, numpy as np
sys.path.insert(0, sys.argv[1])
from conftest import make_config, read_records
from actlab import devices, experiment, program, schedule, train

out = {}
for shard, seeds in [("none", 2), ("batch", 2)]:
    cfg = make_config(dataset={"name": "digits"}, optimizer={"name": "adam", "lr": 3e-3},
                      train={"steps": 20, "log_every": 10, "eval_every": 10, "seeds": seeds,
                             "shard": shard, "batch_size": 32, "probe_size": 64})
    d = tempfile.mkdtemp()
    s = train.run(cfg, d)
    out[f"{shard}-{seeds}"] = {"mesh": s["mesh"], "devices": s["devices"],
                               "records": read_records(d)}
# the batch-split program's collectives, from its compiled text
cfg = make_config(dataset={"name": "digits"}, train={"shard": "batch", "batch_size": 32})
exp = experiment.build(cfg)
lay = devices.layout("batch", 1, 32)  # one member: a 1 x 4 mesh
state, d = devices.place(experiment.initial_state(exp), experiment.device_data(exp), lay)
call = schedule.plan(20, 10, {"eval": 10}, 0, 1, 0)[0]
plan = program.plan_arrays(call, 1, program.measurement_names(exp))
text = program.make_program(exp, 1, lay).lower(state, d, plan).compile().as_text()
out["all_reduce"] = text.count("all-reduce")
try:
    devices.layout("batch", 1, 30)
except devices.ShardError as e:
    out["error"] = str(e)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(Path(__file__).parent)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = next(x for x in p.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_batch_sharded_records_equal_single_device(four_devices):
    """Two members on 4 devices: a 2 x 2 mesh, each member's batches split over 2."""
    seeds, mesh = 2, {"members": 2, "data": 2}
    one, split = four_devices[f"none-{seeds}"], four_devices[f"batch-{seeds}"]
    assert one["devices"] == 1 and split["devices"] == 4 and split["mesh"] == mesh
    assert len(one["records"]) == len(split["records"]) == 3 * seeds
    compared = 0
    for a, b in zip(one["records"], split["records"], strict=True):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if k == "wall_time" or not isinstance(v, float) or not math.isfinite(v):
                continue
            assert b[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (k, a["step"])
            compared += 1
    assert compared > 50


def test_the_batch_split_program_all_reduces(four_devices):
    # the gradient (and every mean over examples) is summed across the data axis
    assert four_devices["all_reduce"] > 0


def test_a_batch_the_devices_cannot_split_is_a_one_line_error(four_devices):
    assert four_devices["error"] == ("train.shard=batch splits each batch over 4 devices; "
                                     "train.batch_size=30 is not a multiple of 4")
