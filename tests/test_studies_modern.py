"""Reduced versions of the modern_ffn and dyt_vs_layernorm studies in experiments/."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab.cli import config_dir
from actlab.config import Config
from actlab.engine import experiment
from actlab.engine.resolve import resolve
from actlab.runs import driver as train
from conftest import read_records

STUDIES = Path(__file__).resolve().parent.parent / "experiments"
FFNS = ("relu2", "reglu", "swiglu")  # the study's six, reduced to one of each kind


def study(name: str, *overrides: str) -> Config:
    """The study's config (as `actlab-train --config-dir experiments/NAME --config-name study`)."""
    with initialize_config_dir(config_dir=str(STUDIES / name), version_base="1.3"):
        cfg = compose("study", overrides=[f"hydra.searchpath=[file://{config_dir()}]",
                                          "logger.progress=false", *overrides])
    return resolve(Config.from_dict(OmegaConf.to_container(cfg, resolve=True)))


def run(tmp_path: Path, name: str, label: str, *overrides: str) -> tuple[dict, list[dict]]:
    """Train a reduced job of a study; its summary.json and its last step's records."""
    train.run(study(name, *overrides), tmp_path / label)
    recs = read_records(tmp_path / label)
    last = max(r["step"] for r in recs)
    summary = json.loads((tmp_path / label / "summary.json").read_text())
    return summary, [r for r in recs if r["step"] == last]


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_modern_ffn_matched_parameters_and_which_units_can_die(tmp_path):
    out = {}
    for act in FFNS:  # the study's Transformer (dim 32, mlp_ratio 2), one block, a few steps
        out[act] = run(tmp_path, "modern_ffn", act, f"activation={act}", "dataset=digits",
                       "model.depth=1", "model.patch=4", "train.steps=20", "train.seeds=1",
                       "train.log_every=10", "train.eval_every=20",
                       "train.metrics=[act_mean,dead_frac]",
                       "train.vmap.optimizer.lr=[0.003,1.0]")  # the study's lr and a lethal one
    params = {act: s["num_params"] for act, (s, _) in out.items()}
    assert len(set(params.values())) > 1  # the gated FFNs have other shapes...
    assert max(params.values()) <= 1.02 * min(params.values())  # ...and the same size
    # without matching, a gated FFN of mlp_ratio * dim units is half as large again
    same = experiment.build(study("modern_ffn", "activation=swiglu", "dataset=digits",
                                  "model.depth=1", "model.patch=4", "model.glu_width=same"))
    state = experiment.initial_state(same)
    unmatched = sum(x[0].size for x in jax.tree.leaves(state.params))
    assert unmatched > 1.2 * params["swiglu"]

    for act, (s, recs) in out.items():
        assert s["status"] == "completed" and len(recs) == 2
        dead = {r["optimizer.lr"]: r["dead_frac/0"] for r in recs}
        assert all(0.0 <= d <= 1.0 for d in dead.values())
        if act in ("gelu", "swiglu", "geglu"):  # no exactly flat side: never dead
            assert set(dead.values()) == {0.0}, act
        if act in ("relu2", "reglu"):  # a flat side: a lethal step size kills units
            assert dead[0.003] < 0.05 and dead[1.0] > 0.1, (act, dead)
        for r in recs:
            gate = r.get("gate_mean/0")
            if act in ("swiglu", "geglu", "reglu"):
                assert gate is not None and np.isfinite(gate)
                if act == "reglu":  # a relu gate is never negative
                    assert gate >= 0.0
            else:
                assert gate is None


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_dyt_layer_norm_and_no_norm_all_train_and_alpha_is_learned(tmp_path):
    acc, alphas = {}, {}
    for norm in ("layer", "dyt", "none"):
        s, recs = run(tmp_path, "dyt_vs_layernorm", norm, f"model.norm={norm}", "model.depth=2",
                      "model.patch=4", "train.steps=150", "train.seeds=2", "train.log_every=50",
                      "train.eval_every=150", "train.metrics=none")  # dyt_alpha: always logged
        assert s["status"] == "completed" and len(recs) == 2
        acc[norm] = [r["eval/acc"] for r in recs]
        alphas[norm] = {k: v for r in recs for k, v in r.items() if k.startswith("dyt_alpha")}
    for norm, a in acc.items():  # digits: 10 classes, chance 0.1
        assert min(a) > 0.6, (norm, a)
    keys = set(alphas["dyt"])
    assert keys == {"dyt_alpha/0", "dyt_alpha/1", "dyt_alpha_attn/0", "dyt_alpha_attn/1",
                    "dyt_alpha/final"}
    assert all(abs(v - 0.5) > 1e-3 for v in alphas["dyt"].values())  # moved from alpha0
    assert alphas["layer"] == alphas["none"] == {}
