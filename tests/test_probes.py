"""Probes on an actlab model against independent computations: a dense Hessian, a
per-example gradient loop, the model's own per-layer norms (tests/test_curvature.py has
the curvature, GSNR and weight-spectrum probes in detail)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from actlab.engine import experiment
from actlab.measure import heads
from actlab.measure.probes import estimators as probes
from actlab.measure.probes import spectra
from conftest import make_config


def tiny_experiment(act="tanh", **model):
    cfg = make_config(activation={"name": act}, model={"depth": 2, "width": 5, **model},
                      dataset={"name": "xor"}, train={"probe_size": 40})
    exp = experiment.build(cfg)
    state = experiment.initial_state(exp, [{"seed": 3}])
    return exp, jax.tree.map(lambda a: a[0], state.params)


def tiny_problem(act="tanh"):
    exp, params = tiny_experiment(act)
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
    top = np.linalg.eigvalsh(np.asarray(dense, np.float64))[-1]  # largest, not largest |.|
    got = jax.jit(lambda p: probes.hessian_top_eig(lambda q: loss(q, x, y), p,
                                                   jax.random.PRNGKey(0), iters=40))(params)
    assert float(got) == pytest.approx(top, rel=2e-3)


@pytest.mark.parametrize("model", [{"depth": 4, "scan_layers": True},
                                   {"depth": 3, "scan_layers": False}])
def test_layer_masks_select_each_layers_weights(model):
    exp, params = tiny_experiment(**model)
    masks = probes.layer_masks(exp.model, params, out=True)
    assert len(masks) == exp.model.num_layers + 1
    sq, out_sq = exp.model.layer_sqnorms(params)
    got = [sum(float(jnp.sum(m * p**2)) for m, p in zip(jax.tree.leaves(mask),
                                                         jax.tree.leaves(params), strict=True))
           for mask in masks]
    np.testing.assert_allclose(got, [*np.asarray(sq), float(out_sq)], rtol=1e-5)
    total = sum(ravel_pytree(m)[0] for m in masks)
    assert set(np.unique(np.asarray(total)).tolist()) <= {0.0, 1.0}  # disjoint
    if model["scan_layers"]:  # stacked rows: one row of hidden_kernel per layer
        rows = [np.asarray(m["hidden_kernel"]).sum(axis=(1, 2)) for m in masks[1:-1]]
        assert [list(np.flatnonzero(r)) for r in rows] == [[0], [1], [2]]
    kernels = spectra.layer_kernels(exp.model, params)
    want = ([params["in_kernel"], *params["hidden_kernel"]] if model["scan_layers"] else
            [params["in_kernel"], *[params[f"hidden{l}_kernel"] for l in (1, 2)]])
    assert [k.shape for k in kernels] == [w.shape for w in want]
    assert all(np.array_equal(k, w) for k, w in zip(kernels, want, strict=True))


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
