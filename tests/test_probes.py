"""Probes against independent computations: a dense Hessian, a per-example gradient loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from actlab import experiment, heads, probes
from conftest import make_config


def tiny_problem(act="tanh"):
    cfg = make_config(activation={"name": act}, model={"depth": 2, "width": 5},
                      dataset={"name": "xor"}, train={"probe_size": 40})
    exp = experiment.build(cfg)
    state = experiment.initial_state(exp, [{"seed": 3}])
    params = jax.tree.map(lambda a: a[0], state.params)
    loss_of = heads.head("softmax").loss

    def loss(p, x, y):
        return loss_of(exp.model.apply(p, {}, x)[0], y)

    x = jnp.asarray(exp.dataset.x_train[:40])
    y = jnp.asarray(exp.dataset.y_train[:40])
    return params, loss, x, y


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_hessian_top_eigenvalue_matches_dense_eigendecomposition(act):
    params, loss, x, y = tiny_problem(act)
    flat, unravel = ravel_pytree(params)
    dense = jax.hessian(lambda f: loss(unravel(f), x, y))(flat)
    eigs = np.linalg.eigvalsh(np.asarray(dense, np.float64))
    top = eigs[np.argmax(np.abs(eigs))]
    got = probes.hessian_top_eig(lambda p: loss(p, x, y), params, jax.random.PRNGKey(0),
                                 iters=200)
    assert float(got) == pytest.approx(top, rel=2e-3)


def test_noise_scale_matches_a_per_example_loop():
    params, loss, x, y = tiny_problem()
    got = jax.jit(lambda p: probes.noise_scale(loss, p, x, y, chunk=7))(params)
    g = np.stack([np.asarray(ravel_pytree(jax.grad(loss)(params, x[i:i + 1], y[i:i + 1]))[0],
                             np.float64) for i in range(len(x))])
    b = len(g)
    mean = g.mean(0)
    trace_cov = np.sum((g - mean) ** 2) / (b - 1)  # unbiased sample covariance trace
    grad_sq = mean @ mean - trace_cov / b
    assert float(got["noise_scale/trace_cov"]) == pytest.approx(trace_cov, rel=1e-3)
    assert float(got["noise_scale/grad_sq"]) == pytest.approx(grad_sq, rel=1e-3)
    assert float(got["noise_scale/b_simple"]) == pytest.approx(trace_cov / grad_sq, rel=2e-3)


def test_noise_scale_is_zero_without_gradient_noise():
    params, loss, x, y = tiny_problem()
    same_x, same_y = jnp.repeat(x[:1], 16, 0), jnp.repeat(y[:1], 16, 0)
    got = probes.noise_scale(loss, params, same_x, same_y)
    assert abs(float(got["noise_scale/b_simple"])) < 1e-4
