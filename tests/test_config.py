"""The configuration: one source of defaults, one validator, the resolved form."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from actlab.config import Config, ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def yaml_defaults() -> dict:
    """configs/config.yaml with its default group options merged in (as Hydra composes it)."""
    top = yaml.safe_load((CONFIGS / "config.yaml").read_text())
    out = {k: v for k, v in top.items() if k not in ("defaults", "hydra")}
    for entry in top["defaults"]:
        if isinstance(entry, dict):
            (group, option), = entry.items()
            out[group] = yaml.safe_load((CONFIGS / group / f"{option}.yaml").read_text()) or {}
    return out


def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_command_line_defaults_are_the_library_defaults():
    from_yaml = Config.from_dict(yaml_defaults()).to_dict()
    from_code = Config.from_dict({}).to_dict()
    assert leaves(from_yaml) == leaves(from_code)
    # every key the YAML spells out exists in the resolved config
    resolved = leaves(from_code)
    for key in leaves(yaml_defaults()):
        if key.startswith("train.vmap") or key.startswith("logger.wandb"):
            continue  # null grid entries and W&B options are absent until given
        assert key in resolved, key


def test_resolved_config_fills_every_default_and_round_trips():
    cfg = Config.from_dict({"model": {"name": "cnn", "channels": 8},
                            "dataset": {"name": "mnist1d", "view": "sequence"},
                            "train": {"target": "train/loss<=0.1",
                                      "vmap": {"optimizer": {"lr": [0.1, 0.01]}}}})
    d = cfg.to_dict()
    assert d["model"] == {"name": "cnn", "depth": 3, "channels": 8, "kernel_size": 3,
                          "stride": 1, "pool": "max", "norm": "none", "head": "softmax",
                          "loss": "cross_entropy", "activations": None}
    assert d["dataset"] == {"name": "mnist1d", "num_samples": 5000, "view": "sequence",
                            "seed": 42}
    assert d["train"]["target"] == "train/loss<=0.1"
    assert d["train"]["vmap"] == {"optimizer": {"lr": [0.1, 0.01]}}
    assert Config.from_dict(d).to_dict() == d


@pytest.mark.parametrize(("section", "message"), [
    ({"train": {"steps": 0}}, "train.steps must be >= 1, got 0"),
    ({"train": {"log_every": 2.5}}, "train.log_every must be an integer, got 2.5"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr must be > 0, got 0"),
    ({"optimizer": {"b2": 1.0}}, "optimizer.b2 must be < 1, got 1"),
    ({"optimizer": {"name": "lion"}}, "unknown optimizer.name 'lion'; choose from: sgd, momentum"),
    ({"init": {"lr": 1}}, "init has no key lr; known: distribution, gain, name"),
    ({"probes": {"hessian": {"every": -1}}}, "probes.hessian.every must be >= 0, got -1"),
    ({"logger": {"progress": "maybe"}}, "logger.progress must be true or false, got 'maybe'"),
    ({"train": {"log_steps_per_call": 0}}, "train.log_steps_per_call must be >= 1, got 0"),
    ({"train": {"vmap": {"optimizer": {"momentum": [0.5]}}}},
     "train.vmap.optimizer.momentum cannot be vmapped"),
])
def test_one_validator_one_line_messages(section, message):
    with pytest.raises(ConfigError) as e:
        Config.from_dict(section)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
