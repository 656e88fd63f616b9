"""Curvature, gradient-noise and weight-spectrum probes against dense float64 references.

The network is a two-hidden-layer tanh MLP written here in jnp (115 parameters), so
its Hessian, blocks and per-example gradients can be formed directly.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from actlab.measure.probes import estimators as probes
from actlab.measure.probes import spectra

SIZES = [(4, 8), (8, 6), (6, 3)]  # layer 0, layer 1, output
LAYERS = [("w0", "b0"), ("w1", "b1")]


def init(rng):
    params = {}
    for i, (a, b) in enumerate(SIZES):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(a, b)) * 1.5 / np.sqrt(a), jnp.float32)
        params[f"b{i}"] = jnp.asarray(0.3 * rng.normal(size=b), jnp.float32)
    return params


def logits(p, x):
    h = jnp.tanh(x @ p["w0"] + p["b0"])
    h = jnp.tanh(h @ p["w1"] + p["b1"])
    return h @ p["w2"] + p["b2"]


def example_loss(p, x, y):
    """Mean softmax cross-entropy over the batch (x, y)."""
    z = logits(p, x)
    return jnp.mean(jax.nn.logsumexp(z, axis=-1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0])


def masks_of(params):
    return [{k: np.full(v.shape, float(k in names), np.float32) for k, v in params.items()}
            for names in LAYERS]


@jax.jit
def _hessian(params, x, y):
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda f: example_loss(unravel(f), x, y))(flat)


@jax.jit
def _per_example_grads(params, x, y):
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda f, xi, yi: example_loss(unravel(f), xi[None], yi[None]))
    return jax.vmap(grad, in_axes=(None, 0, 0))(flat, x, y)


def float64(tree):
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64)
                        if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class Problem:
    """Weights drawn with `seed`; the same data for every seed."""

    def __init__(self, seed=0, b=24):
        self.params = init(np.random.default_rng(seed))
        rng = np.random.default_rng(100)
        self.x = jnp.asarray(rng.normal(size=(b, 4)), jnp.float32)
        self.y = jnp.asarray(rng.integers(0, 3, b), jnp.int32)
        self.masks = masks_of(self.params)
        self.loss = lambda p: example_loss(p, self.x, self.y)
        self.blocks = [np.flatnonzero(ravel_pytree(m)[0]) for m in self.masks]

    @functools.cached_property
    def hessian(self) -> np.ndarray:
        with jax.enable_x64(True):
            return np.asarray(_hessian(*float64((self.params, self.x, self.y))), np.float64)

    @functools.cached_property
    def eigs(self) -> np.ndarray:
        return np.linalg.eigvalsh(self.hessian)  # ascending

    @functools.cached_property
    def grads(self) -> np.ndarray:
        """Per-example gradients [B, n] in float64."""
        with jax.enable_x64(True):
            return np.asarray(_per_example_grads(*float64((self.params, self.x, self.y))),
                              np.float64)


SETTINGS = {"k": 4, "iters": 30, "trace_samples": 300, "layer_iters": 30, "slq_samples": 200,
            "slq_iters": 12, "chunk": 7}


@pytest.fixture(scope="module")
def members():
    """Two problems (same data, different weights) and every probe of both, from one program.

    The probes run as the engine runs them: jitted, vmapped over the members, inside
    lax.cond; `off` is the same program with the condition false.
    """
    probs = [Problem(seed=s) for s in (0, 1)]
    x, y, masks = probs[0].x, probs[0].y, probs[0].masks
    s = SETTINGS

    def loss(p):
        return example_loss(p, x, y)

    def all_probes(p, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return {**probes.hessian_eigs(loss, p, k1, k=s["k"], iters=s["iters"]),
                **probes.hessian_trace(loss, p, k2, samples=s["trace_samples"], masks=masks,
                                       batch=10),
                **probes.hessian_slq(loss, p, k3, samples=s["slq_samples"],
                                     iters=s["slq_iters"], batch=20),
                **probes.hessian_layer_top_eig(loss, p, k4, masks, iters=s["layer_iters"]),
                **probes.gsnr(example_loss, p, x, y, masks, chunk=s["chunk"]),
                **spectra.weight_spectra([p["w0"], p["w1"]], min_evals=4)}

    def switched(p, keys, flag):
        fn = jax.vmap(all_probes)
        nans = lambda p, k: jax.tree.map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype),  # noqa: E731
                                         jax.eval_shape(fn, p, k))
        return jax.lax.cond(flag, fn, nans, p, keys)

    run = jax.jit(switched)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[m.params for m in probs])
    keys = jax.random.split(jax.random.PRNGKey(8), 2)
    on = jax.tree.map(np.asarray, run(stacked, keys, True))
    off = jax.tree.map(np.asarray, run(stacked, keys, False))
    return probs, [{k: v[i] for k, v in on.items()} for i in range(2)], off


@pytest.mark.parametrize("i", [0, 1])
def test_top_k_eigenvalues_match_the_dense_hessian(members, i):
    prob, got = members[0][i], members[1][i]
    k = SETTINGS["k"]
    want = prob.eigs[::-1][:k]
    np.testing.assert_allclose([got[f"hessian/eig_{j}"] for j in range(k)], want, rtol=1e-3)
    assert got["hessian/top_eig"] == got["hessian/eig_0"]


def test_exhausted_krylov_spaces_of_a_network():
    prob = Problem()
    n = len(prob.eigs)

    def dead(p):  # layer 1's weights act, but the loss has no derivative in them
        return prob.loss({**p, "w1": jax.lax.stop_gradient(p["w1"]),
                          "b1": jax.lax.stop_gradient(p["b1"])})

    @jax.jit
    def run(p, key):
        flat, hvp = probes.flat_hvp(prob.loss, p)
        full = probes.ritz(*probes.lanczos(hvp, jax.random.normal(key, flat.shape), n + 50))
        return full, probes.hessian_layer_top_eig(dead, p, key, prob.masks, iters=10)

    (nodes, weights, valid), top = jax.tree.map(np.asarray,
                                                run(prob.params, jax.random.PRNGKey(3)))
    top = top["hessian/top_eig_layer"]
    assert top[1] == 0 and top[0] > 0  # a block without curvature: 0, not NaN
    # a repeated eigenvalue (here 0: the softmax is blind to a shift of all logits) is
    # one Ritz value; the Krylov space stops short of n (iters is cut to n)
    assert nodes.shape == (n,) and 90 < valid.sum() < n and valid[-valid.sum():].all()
    found = nodes[valid][::-1]
    tol = 2e-4 * np.abs(prob.eigs).max()
    np.testing.assert_allclose(found[:40], prob.eigs[::-1][:40], atol=tol)
    np.testing.assert_allclose(found[-40:], prob.eigs[:40][::-1], atol=tol)
    assert np.abs(found[:, None] - prob.eigs[None]).min(1).max() < 1e-4


def test_exhausted_krylov_space_gives_exact_values_not_garbage():
    a = jnp.asarray(np.diag([3.0, 1.0, 1.0, 0.0, 0.0, 0.0]), jnp.float32)

    @jax.jit
    def run(v):
        return (probes.ritz(*probes.lanczos(lambda u: a @ u, v, 6)),
                probes.ritz(*probes.lanczos(lambda u: 0 * u, v, 4)),
                probes.ritz(*probes.lanczos(lambda u: a @ u, v * jnp.nan, 4)),
                probes.hessian_eigs(lambda p: 0.5 * p["x"] @ a @ p["x"], {"x": v},
                                    jax.random.PRNGKey(0), k=5, iters=8))

    (nodes, weights, valid), zero, nan, eigs = jax.tree.map(np.asarray, run(jnp.ones(6)))
    got = [eigs[f"hessian/eig_{i}"] for i in range(5)]  # 6 steps at most; 3 found
    np.testing.assert_allclose(got, [3, 1, 0, np.nan, np.nan], atol=1e-5)
    assert valid.sum() == 3  # the distinct eigenvalues seen from the all-ones vector
    np.testing.assert_allclose(np.sort(nodes[valid]), [0, 1, 3], atol=1e-5)
    np.testing.assert_allclose(weights[valid], [0.5, 1 / 3, 1 / 6], rtol=1e-5)
    assert zero[2].tolist() == [False, False, False, True]
    assert np.isfinite(zero[0]).all() and zero[1][-1] == 1 and zero[0][-1] == 0
    assert np.isnan(nan[0]).all() and np.isnan(nan[1]).all()


@pytest.mark.parametrize("i", [0, 1])
def test_hutchinson_trace_and_layer_traces_within_three_standard_errors(members, i):
    prob, got = members[0][i], members[1][i]
    exact = np.trace(prob.hessian)
    se = got["hessian/trace_se"]
    assert 0 < se < 0.2 * abs(exact)
    assert abs(got["hessian/trace"] - exact) < 3 * se
    blocks = [np.trace(prob.hessian[np.ix_(b, b)]) for b in prob.blocks]
    assert got["hessian/trace_layer"].shape == got["hessian/trace_se_layer"].shape == (2,)
    for l, want in enumerate(blocks):
        assert abs(got["hessian/trace_layer"][l] - want) < 3 * got["hessian/trace_se_layer"][l]


@pytest.mark.parametrize("i", [0, 1])
def test_layer_top_eigenvalues_match_the_dense_blocks(members, i):
    prob, got = members[0][i], members[1][i]["hessian/top_eig_layer"]
    want = [np.linalg.eigvalsh(prob.hessian[np.ix_(b, b)])[-1] for b in prob.blocks]
    assert got.shape == (2,)
    np.testing.assert_allclose(got, want, rtol=1e-3)


@pytest.mark.parametrize("i", [0, 1])
def test_slq_moments_match_traces_of_hessian_powers(members, i):
    prob, got = members[0][i], members[1][i]
    samples, iters = SETTINGS["slq_samples"], SETTINGS["slq_iters"]
    nodes = got["hessian/slq_nodes"].astype(np.float64)
    weights = got["hessian/slq_weights"].astype(np.float64)
    assert nodes.shape == weights.shape == (samples, iters)
    assert (np.diff(nodes, axis=1) >= 0).all()
    n = len(prob.eigs)
    for p in (0, 1, 2):
        per = np.sum(weights * nodes**p, axis=1)  # v'H^p v / n for each probe v
        want = np.sum(prob.eigs**p) / n
        if p == 0:
            np.testing.assert_allclose(per, 1, rtol=1e-5)
        else:
            assert abs(per.mean() - want) < 3.5 * per.std(ddof=1) / np.sqrt(samples)
    grid = np.linspace(nodes.min() - 1, nodes.max() + 1, 4001)
    rho = probes.density(nodes, weights, grid, sigma=0.05)
    step = grid[1] - grid[0]
    assert np.sum(rho) * step == pytest.approx(1, abs=1e-3)
    assert np.sum(grid * rho) * step == pytest.approx(np.sum(weights * nodes) / samples, rel=1e-3)


@pytest.mark.parametrize("i", [0, 1])
def test_gsnr_matches_a_per_example_computation(members, i):
    prob, got = members[0][i], members[1][i]
    g = prob.grads
    mean, var = g.mean(0), g.var(0)  # ddof 0, as cockpit
    r = mean**2 / (var + 1e-5)
    want = [r[b].mean() for b in prob.blocks]
    np.testing.assert_allclose(got["gsnr_layer"], want, rtol=2e-3)  # chunks 7, 7, 7 and 3
    assert got["gsnr_mean"] == pytest.approx(r.mean(), rel=2e-3)


def test_gradient_moments_and_gsnr_without_noise():
    prob = Problem()
    g = prob.grads
    x, y = jnp.repeat(prob.x[:1], 8, 0), jnp.repeat(prob.y[:1], 8, 0)

    @jax.jit
    def run(p):
        return (probes.gradient_moments(example_loss, p, prob.x, prob.y, chunk=5),
                probes.gsnr(example_loss, p, x, y, prob.masks, chunk=3, eps=1e-3))

    (m, v), same = run(prob.params)
    np.testing.assert_allclose(np.asarray(m), g.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(v), g.var(0), rtol=1e-3, atol=1e-9)
    want = [np.mean(g[0][b] ** 2) / 1e-3 for b in prob.blocks]  # variance 0: mean^2 / eps
    np.testing.assert_allclose(np.asarray(same["gsnr_layer"]), want, rtol=1e-3)


def test_cond_off_gives_nan_of_the_same_structure(members):
    # the vmapped results of both members match their own references in the tests above
    _, got, off = members
    assert set(off) == set(got[0])
    assert all(v.shape[1:] == got[0][k].shape and np.isnan(v).all() for k, v in off.items())


def test_weight_spectra_match_numpy_svd():
    rng = np.random.default_rng(0)
    mats = [rng.normal(size=(30, 12)), rng.normal(size=(12, 40)) * 0.1,
            rng.normal(size=(3, 3, 4, 8))]  # a conv kernel: [36, 8]
    got = jax.jit(lambda ms: spectra.weight_spectra([spectra.as_matrix(m) for m in ms],
                                                    min_evals=5))(
        [jnp.asarray(m, jnp.float32) for m in mats])
    for l, m in enumerate(mats):
        s = np.linalg.svd(m.reshape(-1, m.shape[-1]), compute_uv=False)
        assert float(got["weights/spectral_norm_layer"][l]) == pytest.approx(s[0], rel=1e-5)
        assert float(got["weights/stable_rank_layer"][l]) == pytest.approx(
            np.sum(s**2) / s[0] ** 2, rel=1e-5)
    assert np.isfinite(np.asarray(got["weights/alpha_layer"])).all()
    small = spectra.weight_spectra([jnp.ones((20, 6))])  # fewer than 10 eigenvalues
    assert np.isnan(float(small["weights/alpha_layer"][0]))


def ww_fit(evals, thresh=1e-5):
    """Reference: the power-law fit by a loop over candidate xmins, float64."""
    x = np.sort(np.asarray(evals, np.float64))
    x = x[x > thresh]
    best = (np.inf, None, None)
    for i in range(len(x) - 1):
        tail = x[i:]
        n = len(tail)
        a = 1 + n / np.sum(np.log(tail / x[i]))
        d = 1.0
        if a > 1:
            cdf = 1 - (tail / x[i]) ** (1 - a)
            d = np.max(np.abs(cdf - np.arange(n) / n))
        if d < best[0]:
            best = (d, a, x[i])
    return best


def test_powerlaw_fit_matches_a_loop_over_xmins():
    rng = np.random.default_rng(1)
    evals = np.concatenate([rng.uniform(0, 1e-6, 5), rng.lognormal(0, 1, 200)])
    d, a, xmin = ww_fit(evals)
    got = jax.jit(spectra.powerlaw_fit)(jnp.asarray(evals, jnp.float32))
    assert float(got["alpha"]) == pytest.approx(a, rel=1e-4)
    assert float(got["xmin"]) == pytest.approx(xmin, rel=1e-6)
    assert float(got["ks"]) == pytest.approx(d, abs=1e-5)
    assert int(got["n_tail"]) == int(np.sum(evals >= xmin))


@pytest.mark.parametrize("alpha", [2.5, 3.0])
def test_alpha_recovers_a_pareto_law_of_squared_singular_values(alpha):
    rng = np.random.default_rng(int(alpha * 10))
    n, m = 600, 500
    lam = 0.01 * (1 + rng.pareto(alpha - 1, m))  # density ~ lam^-alpha above 0.01
    u = np.linalg.qr(rng.normal(size=(n, m)))[0]
    v = np.linalg.qr(rng.normal(size=(m, m)))[0]
    w = (u * np.sqrt(lam)) @ v.T
    got = jax.jit(spectra.weight_spectra)([jnp.asarray(w, jnp.float32)])
    got = got["weights/alpha_layer"][0]
    assert float(got) == pytest.approx(alpha, abs=0.2)
