"""Other projects' Flax models as model=custom clients, unmodified (the `clients` extra):
flaxmodels' ResNet18 (linen; BatchNorm state, relu called as a function), transformers'
FlaxBert classifier (linen; a deterministic flag, GELU an ACT2FN partial bound as an
attribute, the pooler's nn.tanh) and mamba2-jax's Mamba2Forecaster (nnx; nnx.Linear
projections, a depthwise conv whose kernel it reads itself, silu an attribute).

Each: every layer's grad_norm against jax.grad of the module's own loss with that module's
parameter subtree norm computed here, its pre-activation moments against linen's
capture_intermediates (nnx: recomputed from the parameters), the sites found without
naming them, and 200 steps through the engine with every metric on.
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
pytest.importorskip("mamba2_jax")

CLIENTS = {  # target -> (train_flag, sites, train keyword of the module's own call)
    "actlab.models.clients:resnet18": ("train", {}, {"train": True}),
    "actlab.models.clients:bert": ("!deterministic", {}, {"deterministic": True}),
}
LINEN = list(CLIENTS)
CLIENTS["actlab.models.clients:mamba2"] = (None, {}, {})


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


@pytest.mark.slow
def test_bert_sites_are_found_where_its_functions_meet_a_layer():
    """ACT2FN's gelu after each intermediate Dense, nn.tanh after the pooler's; nothing after
    the attention projections (a reshape into heads) or the output Dense (a residual)."""
    exp = experiment.build(config("actlab.models.clients:bert"))
    got = {n: sp for n, sp in zip(exp.model.layer_names, exp.model.specs, strict=True)}
    for name, sp in got.items():
        want = ("gelu" if name.endswith("intermediate/dense") else
                "tanh" if name.endswith("pooler/dense") else "identity")
        assert sp.name == want, name
    assert not any(sp.fixed.get("approximate") for sp in got.values())  # BERT's exact gelu


@pytest.mark.slow
def test_mamba2_nnx_grad_norm_per_layer_and_input_projection():
    from flax import nnx

    from actlab.models import clients

    target = "actlab.models.clients:mamba2"
    exp = experiment.build(config(target))
    names = exp.model.layer_names
    assert names == ("inner/input_proj", "inner/mamba2/layers/0/mixer/in_proj",
                     "inner/mamba2/layers/0/mixer/out_proj",
                     "inner/mamba2/layers/1/mixer/in_proj",
                     "inner/mamba2/layers/1/mixer/out_proj")
    params = jax.tree.map(lambda a: a[0], experiment.initial_state(exp).params)
    m, (x, y, xp) = one_step(exp, params, {})
    pure = params["inner"]["nnx_params"]
    graph, tmpl = nnx.split(clients.mamba2((8, 8, 1), 10, rngs=nnx.Rngs(0)))

    def as_nnx(tree, like):  # string keys back to nnx's (list indices are ints)
        if isinstance(like, dict):
            return {k: as_nnx(tree[str(k)], v) for k, v in like.items()}
        return tree

    like = nnx.to_pure_dict(tmpl)

    def loss(p):
        st = jax.tree.map(lambda a: a, tmpl)
        nnx.replace_by_pure_dict(st, as_nnx(p, like))
        return optax.softmax_cross_entropy_with_integer_labels(nnx.merge(graph, st)(x),
                                                               y).mean()

    grads = jax.grad(loss)(pure)
    for l, name in enumerate(names):
        ref = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                          for g in jax.tree.leaves(subtree(grads, name))))
        assert m["grad_norm"][l] == pytest.approx(ref, rel=1e-4, abs=1e-7), name
    w = {k: np.asarray(v, np.float64) for k, v in pure["inner"]["input_proj"].items()}
    z = np.asarray(xp, np.float64).reshape(len(xp), 8, 8) @ w["kernel"] + w["bias"]
    assert m["preact_mean"][0] == pytest.approx(z.mean(), rel=1e-4, abs=1e-6)
    assert m["q"][0] == pytest.approx(np.mean(np.sum(z ** 2, -1) / z.shape[-1]), rel=1e-4)


@pytest.mark.slow  # third-party models, seconds each to compile: CI runs it after the suite
@pytest.mark.parametrize("target", LINEN)
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
    s = driver.run(config(target, dropout=0.1, steps=200, log_every=100, eval_every=200,
                          seeds=2), tmp_path, progress=False)
    built = experiment.build(config(target)).model
    assert s["status"] == "completed" and s["layers"] == list(built.layer_names)
    assert s["sites"] == [sp.name for sp in built.specs]
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in recs if r["step"] == 200]
    assert len(last) == 2
    for r in last:
        # every value finite (a few steps: BatchNorm's running averages still settling)
        assert all(np.isfinite(v) for k, v in r.items() if isinstance(v, float)), r
        assert r["update_ratio/0"] > 0.0
        assert all(f"{k}/0" in r for k in ("q", "c", "delta_norm", "act_mean", "dead_frac"))


def test_clients_module_names_the_models_it_hands_over():
    assert models.names().count("custom") == 1
    assert jnp.zeros(()).dtype == jnp.float32
