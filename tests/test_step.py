"""The pure step functions called directly, jitted and not, on tiny known networks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import data
from actlab.engine import experiment, step
from conftest import make_config

X = np.array([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.5], [2.0, 1.0]], np.float32)
Y = np.array([0, 1, 1, 0], np.int32)


def tiny(lr=0.1, name="sgd", act="tanh"):
    cfg = make_config(activation={"name": act}, model={"depth": 1, "width": 3},
                      optimizer={"name": name, "lr": lr},
                      train={"batch_size": 4, "probe_size": 4})
    ds = data.Dataset(name="hand", x_train=X, y_train=Y, x_test=X, y_test=Y, num_classes=2,
                      mean=np.zeros(2, np.float32), std=np.ones(2, np.float32))
    exp = experiment.build(cfg, dataset=ds)
    state = jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 1}]))
    return exp, state


def numpy_sgd_step(p, lr):
    """Float64 forward/backward of the one-hidden-layer tanh net with softmax cross-entropy."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    z = X @ p["in_kernel"] + p["in_bias"]
    h = np.tanh(z)
    logits = h @ p["out_kernel"] + p["out_bias"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    loss = -np.mean(np.log(prob[np.arange(4), Y]))
    dl = (prob - np.eye(2)[Y]) / 4
    g = {"out_kernel": h.T @ dl, "out_bias": dl.sum(0)}
    dz = dl @ p["out_kernel"].T * (1 - h ** 2)
    g["in_kernel"], g["in_bias"] = X.T @ dz, dz.sum(0)
    return loss, {k: p[k] - lr * g[k] for k in p}


@pytest.mark.parametrize("jit", [True, False])
def test_train_step_is_one_sgd_update(jit):
    exp, state = tiny()
    fn = jax.tree_util.Partial(step.train_step, model=exp.model, tx=exp.tx,
                               loss_fn=step.loss_fn(exp.model, exp.head))
    fn = jax.jit(fn) if jit else fn
    new, out = fn(state, (jnp.asarray(X), jnp.asarray(Y)), None)
    loss, ref = numpy_sgd_step(jax.device_get(state.params), 0.1)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-6)
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(new.params[k]), v, rtol=1e-5, atol=1e-7)
    assert int(new.step) == 1 and int(new.diverged_at) == -1


def test_gate_leaves_parameters_bitwise_unchanged_on_a_non_finite_loss():
    exp, state = tiny()
    updates = jax.tree.map(jnp.ones_like, state.params)
    opt_state = exp.tx.init(state.params)
    frozen = step.gate(state, jnp.float32(jnp.nan), updates, opt_state, state.model_state)
    for a, b in zip(jax.tree.leaves(frozen.params), jax.tree.leaves(state.params), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert int(frozen.diverged_at) == 0 and int(frozen.step) == 1
    # once diverged, a later finite loss does not revive it
    again = step.gate(frozen, jnp.float32(0.5), updates, opt_state, state.model_state)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(again.params), jax.tree.leaves(state.params), strict=True))
    assert int(again.diverged_at) == 0
    # a finite loss on a live member adds the update exactly
    live = step.gate(state, jnp.float32(0.5), updates, opt_state, state.model_state)
    np.testing.assert_array_equal(np.asarray(live.params["in_bias"]),
                                  np.asarray(state.params["in_bias"]) + 1)


def test_gate_apply_false_changes_nothing():
    exp, state = tiny()
    updates = jax.tree.map(jnp.ones_like, state.params)
    same = step.gate(state, jnp.float32(0.5), updates, exp.tx.init(state.params),
                     state.model_state, apply=False)
    assert int(same.step) == 0
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(same.params), jax.tree.leaves(state.params), strict=True))


def test_measure_computes_only_the_selected_families():
    exp, state = tiny(act="relu")
    x, y = jnp.asarray(X), jnp.asarray(Y)
    eps = step.zero_perturbation(exp.model, state.params, state.model_state, x)
    _, out = step.train_step(state, (x, y), None, model=exp.model, tx=exp.tx,
                             loss_fn=step.loss_fn(exp.model, exp.head), eps=eps)
    full = step.measure(state, out, x, y, model=exp.model, head=exp.head)
    some = step.measure(state, out, x, y, model=exp.model, head=exp.head,
                        selected=("grad_norm", "dead_frac"))
    assert set(some) == {"grad_norm", "grad_norm/out", "dead_frac", "train/loss", "train/acc",
                         "logits_rms"}
    for k in some:
        np.testing.assert_allclose(np.asarray(some[k]), np.asarray(full[k]), rtol=1e-6)
    # the selection reaches the traced program: no act_std reduction, no z capture
    jaxpr = str(jax.make_jaxpr(lambda s: step.measure(
        s, out, x, y, model=exp.model, head=exp.head, selected=("grad_norm",)))(state))
    full_jaxpr = str(jax.make_jaxpr(lambda s: step.measure(
        s, out, x, y, model=exp.model, head=exp.head))(state))
    assert "_var" in full_jaxpr and "_var" not in jaxpr  # act_std's variance
    assert jaxpr.count("\n") < full_jaxpr.count("\n")
    # grad_norm of the hidden layer against the gradient computed here
    g = jax.grad(lambda p: step.loss_fn(exp.model, exp.head)(p, None, {}, x, y, None)[0])(
        state.params)
    ref = np.sqrt(np.sum(np.asarray(g["in_kernel"], np.float64) ** 2)
                  + np.sum(np.asarray(g["in_bias"], np.float64) ** 2))
    assert float(some["grad_norm"][0]) == pytest.approx(ref, rel=1e-5)
