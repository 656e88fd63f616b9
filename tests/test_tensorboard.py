"""The TensorBoard sink: event files read back with TensorBoard's own reader match metrics.jsonl."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actlab.writers import TensorBoardWriter, tensorboard_tag
from conftest import read_records
from test_cli import cli

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def load(run: str) -> event_accumulator.EventAccumulator:
    ea = event_accumulator.EventAccumulator(run, size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def test_tags_group_layers_under_their_metric():
    assert tensorboard_tag("grad_norm/3") == "grad_norm/layer_3"
    assert tensorboard_tag("grad_norm/3", width=2) == "grad_norm/layer_03"
    for key in ("eval/acc", "train/loss", "grad_norm/out", "hessian/top_eig", "wall_time"):
        assert tensorboard_tag(key) == key


def test_cli_run_event_files_hold_every_scalar_of_metrics_jsonl(tmp_path):
    out = tmp_path / "run"
    p = cli("dataset=xor", "+experiment=debug", "model.depth=2", "train.seeds=2",
            "logger.sinks=[local,tensorboard]", "logger.progress=false", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    records = read_records(out)
    assert sorted(d.name for d in (out / "tensorboard").iterdir()) == ["seed=0", "seed=1"]
    runs = {s: load(str(out / "tensorboard" / f"seed={s}")) for s in (0, 1)}
    written = 0
    for r in records:
        ea = runs[r["seed"]]
        for k, v in r.items():
            if k in ("step", "seed") or v is None:
                continue
            events = {e.step: e.value for e in ea.Scalars(tensorboard_tag(k))}
            assert events[r["step"]] == pytest.approx(np.float32(v), rel=1e-7, abs=0), k
            written += 1
    in_tb = sum(len(ea.Scalars(t)) for ea in runs.values() for t in ea.Tags()["scalars"])
    assert in_tb == written  # and nothing else
    assert "grad_norm/layer_1" in runs[0].Tags()["scalars"]
    assert "eval/acc" in runs[0].Tags()["scalars"]


def test_histograms_per_member_and_a_resume_purges_the_steps_it_replaces(tmp_path):
    members = [{"optimizer.lr": 0.001, "seed": 0}, {"optimizer.lr": 0.01, "seed": 0}]

    def write(steps, loss):
        w = TensorBoardWriter(tmp_path, members=members)
        w.write_records([{"step": s, "member": i, "seed": 0, "optimizer.lr": m["optimizer.lr"],
                          "train/loss": loss(s), "grad_norm/0": 1.0, "eval/acc": math.nan}
                         for s in steps for i, m in enumerate(members)])
        w.write_histograms(steps[0], {"preact/0": np.arange(2 * 30.0).reshape(2, 3, 10)})
        w.close()

    write([0, 10, 20, 30], lambda s: float(s))
    write([20, 30, 40], lambda s: -float(s))  # resumed from a checkpoint at step 20
    ea = load(str(tmp_path / "tensorboard" / "lr=0.01,seed=0"))
    assert [(e.step, e.value) for e in ea.Scalars("train/loss")] == [
        (0, 0.0), (10, 10.0), (20, -20.0), (30, -30.0), (40, -40.0)]
    assert "eval/acc" not in ea.Tags()["scalars"]  # non-finite: null in metrics.jsonl too
    assert "optimizer.lr" not in ea.Tags()["scalars"] and "seed" not in ea.Tags()["scalars"]
    hist = ea.Histograms("preact/layer_0")
    assert [h.step for h in hist] == [0, 20]
    assert hist[-1].histogram_value.num == 30
    assert hist[-1].histogram_value.min == 30.0 and hist[-1].histogram_value.max == 59.0
