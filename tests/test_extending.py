"""Extending actlab without touching it: a probe and a sink from a file under tests/,
registered and switched on through the config (README's "Extending actlab")."""

from __future__ import annotations

import json

import numpy as np
import pytest
from extension_example import PROBE, SpyWriter, make_spy

from actlab import sinks
from actlab.config import Config, ConfigError
from actlab.engine.resolve import resolve
from actlab.files import METRICS_FILE, read_metrics
from actlab.measure import probes
from actlab.runs import driver

STEPS, EVERY = 30, 10


@pytest.fixture
def registered(monkeypatch):
    """The example probe and sink, registered for one test only."""
    monkeypatch.setattr(probes, "_PROBES", probes._PROBES.copy())
    monkeypatch.setattr(sinks, "_SINKS", sinks._SINKS.copy())
    probes.register(PROBE)
    sinks.register("spy", make_spy, histograms=True)
    SpyWriter.seen.clear()


def config(**probe_settings):
    return Config.from_dict({
        "model": {"depth": 2, "width": 8}, "dataset": {"name": "xor", "num_points": 200},
        "train": {"steps": STEPS, "log_every": EVERY, "eval_every": 0, "seeds": 2,
                  "target": None},
        "probes": {"param_sq": {"every": EVERY, **probe_settings}},
        "logger": {"sinks": ["local", "spy"], "progress": False}})


def test_a_registered_probe_and_sink_run_from_the_config(registered, tmp_path):
    driver.run(config(scale=2.0), tmp_path)
    records, _ = read_metrics(tmp_path / METRICS_FILE)
    assert len(records) == 2 * (STEPS // EVERY + 1)
    for r in records:
        # an independent account of the same quantity: the per-layer weight norms cover
        # every parameter of a plain MLP (kernel and bias of each layer, and the output's)
        layers = sum(v ** 2 for k, v in r.items() if k.startswith("weight_norm/"))
        np.testing.assert_allclose(r["param_sq/total"], 2.0 * layers, rtol=1e-5)
    # the array output went to its own file, one line per (probe step, member)
    lines = [json.loads(s) for s in (tmp_path / "param_sq.jsonl").read_text().splitlines()]
    assert [(d["step"], d["seed"]) for d in lines] == [(r["step"], r["seed"]) for r in records]
    for d, r in zip(lines, records, strict=True):
        np.testing.assert_allclose(sum(d["per_leaf"]), r["param_sq/total"], rtol=1e-5)
    # the sink got what metrics.jsonl got, a final summary, and the histograms it asked for
    (spy,) = SpyWriter.seen
    assert [(r["step"], r["seed"]) for r in spy.records] == [(r["step"], r["seed"])
                                                             for r in records]
    assert spy.summaries[-1][1] and spy.summaries[-1][0]["status"] == "completed"
    assert [s for s, _ in spy.histogram_steps] == list(range(0, STEPS + 1, EVERY))
    assert spy.histogram_steps[0][1] == ["preact/0", "preact/1"]
    assert spy.closed


def test_a_registered_probe_checks_its_settings(registered):
    with pytest.raises(ConfigError, match="probes.param_sq.scale must be > 0"):
        resolve(config(scale=0.0))
    with pytest.raises(ConfigError, match="unknown key probes.param_sq.scal; did you mean"):
        resolve(config(scal=1.0))


def test_unregistered_names_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown key probes.param_sq; valid keys of probes"):
        resolve(Config.from_dict({"probes": {"param_sq": {"every": 1}}}))
    with pytest.raises(ConfigError, match="unknown sink 'spy'; choose from: local"):
        resolve(Config.from_dict({"logger": {"sinks": ["spy"]}}))
