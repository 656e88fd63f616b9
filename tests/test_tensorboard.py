"""The TensorBoard sink: event files read back with TensorBoard's own reader match metrics.jsonl."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actlab.measure import metrics
from actlab.sinks.tensorboard import TensorBoardWriter, tensorboard_tag
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
    # pre-activation histograms at every log step: 64 probe examples x 8 units per layer,
    # their second moment is the record's q/<l> (computed on another path, in float32)
    checked = 0
    for r in records:
        for layer in (0, 1):
            h = {e.step: e.histogram_value
                 for e in runs[r["seed"]].Histograms(f"preact/layer_{layer}")}[r["step"]]
            assert h.num == 64 * 8 and sum(h.bucket) == h.num and len(h.bucket) == 30
            assert h.min <= h.bucket_limit[0] and h.bucket_limit[-1] == pytest.approx(h.max)
            assert h.sum_squares / h.num == pytest.approx(r[f"q/{layer}"], rel=1e-5)
            checked += 1
    assert checked == 2 * len(records)


def test_preact_histograms_match_numpy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 50, 7)).astype(np.float32) * np.array([1, 3, 0.1])[:, None, None]
    z[1, 0, 0], z[1, 4, 2], z[1, 9, 1] = np.nan, np.inf, -np.inf  # left out, not counted
    z[2] = 0.25  # a constant layer: one unit-wide range around its value
    out = {k: np.asarray(v) for k, v in metrics.preact_histograms(z, 12).items()}
    edges, counts, moments = (out[k] for k in metrics.HIST_KEYS)
    for l in range(3):
        v = z[l].ravel().astype(np.float64)
        v = v[np.isfinite(v)]
        lo, hi = (v.min(), v.max()) if v.max() > v.min() else (v[0] - 0.5, v[0] + 0.5)
        ref_counts, ref_edges = np.histogram(v, bins=12, range=(lo, hi))
        np.testing.assert_allclose(edges[l], ref_edges, rtol=1e-5, atol=1e-6)
        assert np.abs(counts[l] - ref_counts).sum() <= 2  # a value on an edge may move a bin
        assert counts[l].sum() == v.size
        np.testing.assert_allclose(moments[l], [v.size, v.sum(), np.square(v).sum()],
                                   rtol=1e-4, atol=1e-4)
    assert counts[2].tolist() == [0] * 6 + [350] + [0] * 5  # 0.25 in [0.25, 0.333)
    empty = {k: np.asarray(v) for k, v in metrics.preact_histograms(
        np.full((1, 4, 2), np.nan, np.float32), 5).items()}
    assert empty["preact_hist/counts"].sum() == 0 and empty["preact_hist/moments"][0, 0] == 0


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
