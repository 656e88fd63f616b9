"""Other projects' Flax models as model=custom clients, unmodified (the `clients` extra):
flaxmodels' ResNet18 (BatchNorm state, relu called as a function) and transformers'
FlaxBert classifier (a deterministic flag, GELU bound as an attribute).

Each: every layer's grad_norm against jax.grad of the module's own loss with that module's
parameter subtree norm computed here, its pre-activation moments against linen's
capture_intermediates, and a short run through the engine with every metric on.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_custom_model import PROBE, one_step

from actlab import models
from actlab.engine import experiment
from actlab.runs import driver
from conftest import make_config

pytest.importorskip("flaxmodels")
pytest.importorskip("transformers")

CLIENTS = {  # target -> (train_flag, sites, train keyword of the module's own call)
    "actlab.models.clients:resnet18": ("train", {}, {"train": True}),
    "actlab.models.clients:bert": ("!deterministic", {"*intermediate/dense": "gelu",
                                                      "*pooler/dense": "tanh"},
                                   {"deterministic": True}),
}


def config(target, dropout=0.0, **train):
    """(dropout 0 where the step is compared with a reference loss without a dropout key)"""
    flag, sites, _ = CLIENTS[target]
    kwargs = {"dropout": dropout} if target.endswith(":bert") else {}
    return make_config(model={"name": "custom", "target": target, "train_flag": flag,
                              "sites": sites, "kwargs": kwargs},
                       dataset={"name": "digits"}, optimizer={"name": "sgd", "lr": 0.05},
                       train={"batch_size": 16, "probe_size": PROBE, **train})


def subtree(tree, path):
    for k in path.split("/"):
        tree = tree[k]
    return tree


@pytest.mark.slow  # third-party models, seconds each to compile: CI runs it after the suite
@pytest.mark.parametrize("target", list(CLIENTS))
def test_grad_norm_per_discovered_layer_and_preactivations(target):
    exp = experiment.build(config(target))
    state = experiment.initial_state(exp)
    params = jax.tree.map(lambda a: a[0], state.params)
    model_state = jax.tree.map(lambda a: a[0], state.model_state)
    m, (x, y, xp) = one_step(exp, params, model_state)
    module = exp.model.module.inner  # the client's own module
    train_kw = CLIENTS[target][2]
    train_mode = {k: (not v) if k == "deterministic" else v for k, v in train_kw.items()}
    inner_state = {k: v["inner"] for k, v in model_state.items()}

    def loss(p):
        mutable = {"mutable": list(inner_state)} if inner_state else {}
        out = module.apply({"params": p, **inner_state}, x, **train_mode, **mutable)
        logits = out[0] if inner_state else out
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params["inner"])
    names = exp.model.layer_names
    assert len(names) == len(m["grad_norm"]) >= 10
    for l, name in enumerate(names):
        ref = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                          for g in jax.tree.leaves(subtree(grads, name))))
        assert m["grad_norm"][l] == pytest.approx(ref, rel=1e-4, abs=1e-7), name
    # pre-activations of the measurement (evaluation mode) against capture_intermediates
    _, inter = module.apply({"params": params["inner"], **inner_state}, xp,
                            **{k: v if k == "deterministic" else False
                               for k, v in train_kw.items()},
                            capture_intermediates=True, mutable=["intermediates"])
    for l in (0, len(names) - 1):
        z = np.asarray(subtree(inter["intermediates"], names[l])["__call__"][0], np.float64)
        assert m["preact_mean"][l] == pytest.approx(z.mean(), rel=1e-4, abs=1e-6), names[l]


@pytest.mark.slow
@pytest.mark.parametrize("target", list(CLIENTS))
def test_client_trains_in_the_engine_with_every_metric(tmp_path, target):
    s = driver.run(config(target, dropout=0.1, steps=40, log_every=20, eval_every=40, seeds=2),
                   tmp_path, progress=False)
    assert s["status"] == "completed" and s["layers"] == list(
        experiment.build(config(target)).model.layer_names)
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in recs if r["step"] == 40]
    assert len(last) == 2
    for r in last:
        # every value finite (a few steps: BatchNorm's running averages still settling)
        assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
        assert r["update_ratio/0"] > 0.0
        assert all(f"{k}/0" in r for k in ("q", "c", "delta_norm", "act_mean", "dead_frac"))


def test_clients_module_names_the_models_it_hands_over():
    assert models.names().count("custom") == 1
    assert jnp.zeros(()).dtype == jnp.float32
