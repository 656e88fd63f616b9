"""The configuration: one validator, the resolved form (defaults: test_defaults.py)."""

from __future__ import annotations

import pytest

from actlab.config import Config, ConfigError
from actlab.engine.resolve import resolve


def test_resolved_config_fills_every_default_and_round_trips():
    cfg = resolve(Config.from_dict({"model": {"name": "cnn", "channels": 8},
                            "dataset": {"name": "mnist1d", "view": "sequence"},
                            "train": {"target": "train/loss<=0.1",
                                      "vmap": {"optimizer": {"lr": [0.1, 0.01]}}}}))
    d = cfg.to_dict()
    assert d["model"] == {"name": "cnn", "depth": 3, "channels": 8, "kernel_size": 3,
                          "stride": 1, "pool": "max", "norm": "none", "head": "softmax",
                          "loss": "cross_entropy", "activations": None}
    assert d["dataset"] == {"name": "mnist1d", "num_samples": 5000, "view": "sequence",
                            "seed": 42}
    assert d["train"]["target"] == "train/loss<=0.1"
    assert d["train"]["vmap"] == {"optimizer": {"lr": [0.1, 0.01]}}
    assert resolve(Config.from_dict(d)).to_dict() == d


@pytest.mark.parametrize(("section", "message"), [
    ({"train": {"steps": 0}}, "train.steps must be >= 1, got 0"),
    ({"train": {"log_every": 2.5}}, "train.log_every must be an integer, got 2.5"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr must be > 0, got 0"),
    ({"optimizer": {"b2": 1.0}}, "optimizer.b2 must be < 1, got 1"),
    ({"optimizer": {"name": "lion"}}, "unknown optimizer.name 'lion'; choose from: sgd, momentum"),
    ({"init": {"lr": 1}}, "unknown key init.lr; valid keys of init: distribution, gain, name"),
    ({"probes": {"hessian": {"every": -1}}}, "probes.hessian.every must be >= 0, got -1"),
    ({"logger": {"progress": "maybe"}}, "logger.progress must be true or false, got 'maybe'"),
    ({"train": {"log_steps_per_call": 0}}, "train.log_steps_per_call must be >= 1, got 0"),
    ({"train": {"vmap": {"optimizer": {"momentum": [0.5]}}}},
     "train.vmap.optimizer.momentum cannot be vmapped"),
])
def test_one_validator_one_line_messages(section, message):
    with pytest.raises(ConfigError) as e:
        resolve(Config.from_dict(section))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
