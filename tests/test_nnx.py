"""nnx modules as model=custom and under actlab.watch: layers tapped, sites found.

References: jax.grad of the nnx module's own loss (nnx.split / nnx.merge, nothing of
actlab) with each Linear's parameter norms taken here, its pre-activations recomputed in
numpy from the parameters, dead_frac of the relu it calls as a function in numpy, and an
optax loop written here for the notebook API.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_custom_model import one_step

import actlab
from actlab.engine import experiment
from conftest import make_config


def custom(target, **train):
    return make_config(model={"name": "custom", "target": target},
                       dataset={"name": "digits"}, optimizer={"name": "sgd", "lr": 0.1},
                       train={"batch_size": 16, "probe_size": 32, **train})


def norm(tree):
    return np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                       for g in jax.tree.leaves(tree)))


def test_nnx_mlp_layers_sites_and_gradients_against_its_own_loss():
    exp = experiment.build(custom("custom_clients:nnx_mlp"))
    assert exp.model.layer_names == ("fc1", "fc2")
    relu, gelu = exp.model.specs
    assert relu.name == "relu" and gelu.name == "gelu" and gelu.fixed["approximate"]
    state = experiment.initial_state(exp)
    params = jax.tree.map(lambda a: a[0], state.params)
    p = params["inner"]["nnx_params"]
    p["fc1"]["bias"] = p["fc1"]["bias"].at[:4].set(-50.0)  # 4 dead units
    m, (x, y, xp) = one_step(exp, params, {})

    from custom_clients import NnxMLP

    graph, ref_state = nnx.split(NnxMLP(64, 12, 10, rngs=nnx.Rngs(0)))
    pure = {k: {n: p[k][n] for n in p[k]} for k in p}

    def loss(pd):
        st = jax.tree.map(lambda a: a, ref_state)
        nnx.replace_by_pure_dict(st, pd)
        logits = nnx.merge(graph, st)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(pure)
    assert m["grad_norm"][0] == pytest.approx(norm(grads["fc1"]), rel=1e-5)
    assert m["grad_norm"][1] == pytest.approx(norm(grads["fc2"]), rel=1e-5)
    assert m["grad_norm/out"] == pytest.approx(norm(grads["head"]), rel=1e-5)
    w = {k: {n: np.asarray(v, np.float64) for n, v in p[k].items()} for k in p}
    z0 = np.asarray(xp, np.float64).reshape(len(xp), -1) @ w["fc1"]["kernel"] + w["fc1"]["bias"]
    dead = np.mean(np.all(z0 <= 0, axis=0))
    assert dead >= 4 / 12 and m["dead_frac"][0] == pytest.approx(dead, abs=1e-7)
    z1 = np.maximum(z0, 0) @ w["fc2"]["kernel"] + w["fc2"]["bias"]
    assert m["preact_mean"][1] == pytest.approx(z1.mean(), rel=1e-4, abs=1e-6)
    assert m["q"][1] == pytest.approx(np.mean(np.sum(z1 ** 2, -1) / 12), rel=1e-5)


def test_an_nnx_factory_draws_each_seed_from_its_own_key():
    exp = experiment.build(custom("custom_clients:nnx_mlp", seeds=3))
    k = np.asarray(experiment.initial_state(exp).params["inner"]["nnx_params"]["fc1"]["kernel"])
    assert k.shape[0] == 3 and not np.allclose(k[0], k[1]) and not np.allclose(k[1], k[2])


def test_nnx_batchnorm_statistics_and_dropout_stream_are_state_that_training_updates():
    exp = experiment.build(custom("custom_clients:nnx_norm_drop"))
    state = jax.tree.map(lambda a: a[0], experiment.initial_state(exp))
    ds = exp.dataset
    x = jnp.asarray(ds.x_train[:16])
    model = exp.model
    before = state.model_state
    _, _, after = model.apply(state.params, before, x, train=True, rng=jax.random.PRNGKey(1))
    flat_b = dict(jax.tree_util.tree_flatten_with_path(before)[0])
    flat_a = dict(jax.tree_util.tree_flatten_with_path(after)[0])
    names = {jax.tree_util.keystr(k): k for k in flat_b}
    mean = next(k for s, k in names.items() if "bn" in s and "mean" in s)
    count = next(k for s, k in names.items() if "count" in s)
    z = np.asarray(x, np.float64).reshape(16, -1) @ np.asarray(
        state.params["inner"]["nnx_params"]["fc"]["kernel"], np.float64) + np.asarray(
        state.params["inner"]["nnx_params"]["fc"]["bias"], np.float64)
    # nnx BatchNorm: ra <- momentum ra + (1 - momentum) batch mean, momentum 0.99
    np.testing.assert_allclose(np.asarray(flat_a[mean]), 0.01 * z.mean(0), rtol=1e-4,
                               atol=1e-7)
    assert int(flat_a[count]) == int(flat_b[count]) + 1  # one dropout draw
    # evaluation: running statistics used, nothing updated, no dropout
    l1, _, kept = model.apply(state.params, before, x, train=False)
    l2, _, _ = model.apply(state.params, before, x, train=False)
    np.testing.assert_array_equal(np.asarray(l1), np.asarray(l2))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), kept, before))


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_watch_an_nnx_module_in_a_plain_optax_loop_over_two_seeds():
    from custom_clients import NnxMLP

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
    w = actlab.watch(lambda rngs: NnxMLP(6, 16, 2, rngs=rngs), x, num_classes=2,
                     tx=optax.sgd(0.2), metrics=["grad_norm", "dead_frac"])
    assert w.layers == ("fc1", "fc2") and [s.name for s in w.model.specs] == ["relu", "gelu"]
    states = jax.vmap(w.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    step = jax.jit(jax.vmap(w.step, in_axes=(0, None)))
    losses = []
    first = None
    for t in range(60):
        states, m = step(states, (jnp.asarray(x), jnp.asarray(y)))
        losses.append(np.asarray(m["train/loss"]))
        first = m if t == 0 else first
    assert np.all(losses[-1] < 0.6 * losses[0])
    # step 0's grad_norm/0 against jax.grad of a plain functional loss of member 1
    p0 = jax.vmap(w.init)(jax.random.split(jax.random.PRNGKey(0), 2)).params
    p1 = jax.tree.map(lambda a: a[1], p0)["inner"]["nnx_params"]
    graph, tmpl = nnx.split(NnxMLP(6, 16, 2, rngs=nnx.Rngs(0)))

    def loss(pd):
        st = jax.tree.map(lambda a: a, tmpl)
        nnx.replace_by_pure_dict(st, pd)
        return optax.softmax_cross_entropy_with_integer_labels(
            nnx.merge(graph, st)(x), y).mean()

    g = jax.grad(loss)(p1)
    assert float(first["grad_norm/0"][1]) == pytest.approx(norm(g["fc1"]), rel=1e-5)
