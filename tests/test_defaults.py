"""One source of defaults: what Hydra composes from configs/ is what the code declares.

Checked both ways: every key the YAML spells out is a config field (or a builder's
parameter) with the code's default, and every field the code declares can be set from
the command line because some YAML of its group spells it out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab import data, models
from actlab.config import Config
from actlab.engine.resolve import resolve

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
GROUPS = ("activation", "model", "dataset", "optimizer", "init", "logger")


def composed(*overrides: str) -> dict:
    """The config Hydra composes from configs/ (without its own `hydra` node)."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)
    return out


def leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def option_keys(group: str) -> set[str]:
    """Every key that some option file of `group` spells out."""
    keys: set[str] = set()
    for f in (CONFIGS / group).glob("*.yaml"):
        keys |= set(leaves(yaml.safe_load(f.read_text()) or {}))
    return keys


def test_composed_defaults_equal_the_code_defaults():
    from_yaml = resolve(Config.from_dict(composed())).to_dict()
    from_code = resolve(Config.from_dict({})).to_dict()
    assert leaves(from_yaml) == leaves(from_code)


def test_every_yaml_key_is_a_config_field():
    code = leaves(resolve(Config.from_dict({})).to_dict())
    # train.vmap lists null entries (the axes one can fill in); the code holds none
    spelled = {k for k in leaves(composed()) if not k.startswith("train.vmap.")}
    assert spelled - set(code) == set()


def test_every_config_field_is_reachable_from_the_command_line():
    spelled = set(leaves(composed()))
    missing = []
    for key in leaves(resolve(Config.from_dict({})).to_dict()):
        if key in spelled or key == "train.vmap":
            continue
        group, rest = key.split(".", 1)
        # a field the default option leaves out must be spelled out by another option
        # of its group (optimizer.momentum: optimizer=momentum)
        if group not in GROUPS or rest not in option_keys(group):
            missing.append(key)
    assert missing == []


@pytest.mark.parametrize("group,names,params_of",
                         [("model", models.names, models.params_of),
                          ("dataset", data.names, data.params_of)])
def test_every_builder_parameter_is_in_its_option_file(group, names, params_of):
    for name in names():
        spelled = yaml.safe_load((CONFIGS / group / f"{name}.yaml").read_text())
        assert set(params_of(name)) - set(spelled) == set(), name
        extra = set(spelled) - set(params_of(name)) - {"name", "head", "loss", "activations"}
        assert extra == set(), name


def test_every_option_of_every_group_resolves():
    for group in GROUPS:
        for f in sorted((CONFIGS / group).glob("*.yaml")):
            overrides = [f"{group}={f.stem}"]
            if group == "model":  # each model with a dataset whose inputs it takes
                overrides.append("dataset=" + {"mlp": "spiral", "recommender": "ratings"}.get(
                    f.stem, "digits"))
            if (group, f.stem) == ("model", "custom"):  # a factory to import (tests/)
                overrides.append("model.target=custom_clients:mlp")
            resolve(Config.from_dict(composed(*overrides)))


def test_code_only_setting_is_accepted_on_the_command_line():
    out = subprocess.run([sys.executable, "-c", "from actlab.cli import train_main; train_main()",
                          "train.matmul_precision=default", "--cfg", "job"],
                         capture_output=True, text=True, check=True).stdout
    assert yaml.safe_load(out)["train"]["matmul_precision"] == "default"
