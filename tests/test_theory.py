"""Mean-field theory against closed forms, independent numpy/scipy code and wide random networks."""

from __future__ import annotations

import math

import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
import pytest
import scipy.special as sps
from scipy.optimize import brentq

from actlab import activations as A
from actlab import theory as T

LAM, ALP = 1.0507009873554805, 1.6732632423543772
Z, WZ = np.polynomial.hermite_e.hermegauss(201)
WZ = WZ / WZ.sum()  # E[f(z)] ~ sum(WZ * f(Z)) for smooth f


def arccos_kernel(q, c):
    """E[relu(u1) relu(u2)], Var u = q, corr c (Cho & Saul 2009)."""
    return q / (2 * np.pi) * (np.sqrt(1 - c * c) + (np.pi - np.arccos(c)) * c)


def erf_kernel(q, c):
    """E[erf(u1) erf(u2)], Var u = q, corr c (Williams 1997)."""
    return 2 / np.pi * np.arcsin(2 * c * q / (1 + 2 * q))


def one_line_error(fn, *args, match: str) -> str:
    with pytest.raises(T.TheoryError, match=match) as e:
        fn(*args)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    return str(e.value)


# ------------------------------------------------------------------ closed-form kernels

def test_relu_length_map_is_linear():
    q = np.array([1e-3, 0.3, 1.0, 2.5, 40.0])
    for w, b in [(1.0, 0.0), (1.7, 0.1), (2.0, 0.3)]:
        np.testing.assert_allclose(T.length_map("relu", w, b, q), w * q / 2 + b, rtol=1e-13)


def test_relu_kernel_is_the_arccos_kernel():
    c = np.array([-0.999, -0.7, 0.0, 0.4, 0.9, 0.99, 0.99999])
    for q in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(T.kernel("relu", q, c), arccos_kernel(q, c), rtol=0, atol=1e-12)
    # sigma_b2 = 0: c' = (sqrt(1 - c^2) + (pi - arccos c) c) / pi, independent of sigma_w2 and q
    expect = (np.sqrt(1 - c * c) + (np.pi - np.arccos(c)) * c) / np.pi
    np.testing.assert_allclose(T.corr_map("relu", 1.3, 0.0, c, q=0.7), expect, atol=1e-12)


@pytest.mark.parametrize("erf", [jss.erf, sps.erf], ids=["jax", "numpy"])
def test_erf_kernels(erf):
    c = np.array([-0.9, 0.0, 0.3, 0.9, 0.999])
    tol = 1e-9 if erf is jss.erf else 1e-7  # numpy-only phi: phi' by finite differences
    for q in (0.25, 1.0, 4.0):
        np.testing.assert_allclose(T.kernel(erf, q, c), erf_kernel(q, c), atol=1e-10)
        assert abs(T.kernel(erf, q) - erf_kernel(q, 1.0)) < 1e-12
        # E[erf'(u1) erf'(u2)] = (4/pi) / sqrt((1 + 2q)^2 - 4 q^2 c^2)
        dd = 4 / np.pi / np.sqrt((1 + 2 * q) ** 2 - 4 * q * q * c * c)
        np.testing.assert_allclose(T.kernel(erf, q, c, derivative=True), dd, atol=tol)


def test_kinked_away_from_zero_against_nested_quad():
    from scipy.integrate import quad

    q, c = 2.0, 0.6
    r, s = math.sqrt(q), math.sqrt(1 - c * c)

    def inner(z1):
        a = r * c * z1
        pts = sorted((k - a) / (r * s) for k in (-1.0, 1.0))
        return quad(lambda z2: np.clip(a + r * s * z2, -1, 1) * math.exp(-z2 * z2 / 2), -12, 12,
                    points=pts, epsabs=1e-13, limit=200)[0] / math.sqrt(2 * math.pi)

    ref = quad(lambda z1: np.clip(r * z1, -1, 1) * inner(z1) * math.exp(-z1 * z1 / 2), -12, 12,
               points=[-1 / r, 1 / r], epsabs=1e-13, limit=200)[0] / math.sqrt(2 * math.pi)
    assert abs(T.kernel("hard_tanh", q, c) - ref) < 1e-9


def test_derivative_moments_against_monte_carlo():
    z = np.random.default_rng(0).standard_normal(4_000_000)
    s = sps.expit(z)
    selu_d = LAM * np.where(z > 0, 1, ALP * np.exp(np.minimum(z, 0)))
    samples = {"sigmoid": (s * (1 - s)) ** 2, "selu": selu_d**2}
    for name, v in samples.items():
        se = v.std() / math.sqrt(v.size)
        assert abs(T.kernel(name, 1.0, derivative=True) - v.mean()) < 4 * se, name
    assert abs(T.kernel("sigmoid", 1.0, derivative=True) - 0.04484) < 1e-5
    selu = LAM**2 * (0.5 + ALP**2 * math.e**2 * sps.ndtr(-2.0))
    assert abs(T.kernel("selu", 1.0, derivative=True) - selu) < 1e-12


# ------------------------------------------------------------------ fixed points and phases

def test_selu_self_normalises_and_is_slightly_chaotic():
    assert abs(T.q_star("selu", 1.0, 0.0) - 1.0) < 1e-9
    assert abs(T.chi1("selu", 1.0, 0.0) - 1.0716) < 1e-4
    # below it the signal dies (q* = 0), where E[selu'^2] -> lam^2 (1 + alp^2) / 2
    assert abs(T.critical_sigma_w2("selu", 0.0) - 2 / (LAM**2 * (1 + ALP**2))) < 1e-6


def test_relu_critical_point_and_depth_scales():
    assert abs(T.critical_sigma_w2("relu", 0.0) - 2.0) < 1e-6
    assert T.chi1("relu", 2.0, 0.0) == pytest.approx(1.0, abs=1e-12)
    w, b = 1.5, 0.1
    assert T.q_star("relu", w, b) == pytest.approx(b / (1 - w / 2), rel=1e-12)
    assert T.chi1("relu", w, b) == pytest.approx(w / 2, rel=1e-12)
    xi = -1 / math.log(w / 2)  # ordered: c* = 1, chi_c = chi1, and the length map's slope is w/2
    assert T.depth_scales("relu", w, b) == pytest.approx((xi, xi), rel=1e-9)
    out = T.summary("relu", w, b)
    assert out["c_star"] == 1.0 and out["phase"] == "ordered"
    assert out["trainable_depth"] == pytest.approx(6 * xi) and math.isnan(out["critical_sigma_w2"])


def _tanh_reference(b2: float) -> tuple[float, float]:
    """(critical sigma_w2, q* there) for tanh by plain Gauss-Hermite sums and brentq."""
    def qstar(w):
        return brentq(lambda q: w * WZ @ np.tanh(math.sqrt(q) * Z) ** 2 + b2 - q, 1e-12, 50,
                      xtol=1e-15)

    def chi(w):
        return w * WZ @ np.cosh(math.sqrt(qstar(w)) * Z) ** -4

    w = brentq(lambda w: chi(w) - 1, 1.05, 4.0, xtol=1e-14)
    return w, qstar(w)


def test_tanh_critical_points():
    assert abs(T.critical_sigma_w2("tanh", 0.0) - 1.0) < 1e-6
    w = T.critical_sigma_w2("tanh", 0.05)
    assert abs(T.chi1("tanh", w, 0.05) - 1.0) < 1e-6
    w_ref, q_ref = _tanh_reference(0.05)
    assert abs(w - w_ref) < 1e-6 and abs(w - 1.76) < 0.01  # Schoenholz et al. 2017, fig. 1
    assert abs(T.q_star("tanh", w, 0.05) - q_ref) < 1e-8
    np.testing.assert_allclose(T.edge_of_chaos("tanh", [0.0, 0.05]), [1.0, w_ref], atol=1e-6)
    assert T.summary("tanh", w_ref, 0.05)["phase"] == "critical"
    assert T.depth_scales("tanh", w_ref, 0.05)[1] > 1e6  # xi_c diverges at the edge of chaos


def test_xi_q_is_schoenholz_slope():
    w, b = 1.4, 0.2
    q = T.q_star("tanh", w, b)
    t = np.tanh(math.sqrt(q) * Z)
    assert abs(w * WZ @ t**2 + b - q) < 1e-12
    # chi1 + sigma_w2 E[phi'' phi] with tanh'' = -2 tanh sech^2
    slope = w * WZ @ ((1 - t * t) ** 2 - 2 * t * t * (1 - t * t))
    assert T.depth_scales("tanh", w, b)[0] == pytest.approx(-1 / math.log(slope), rel=1e-9)


def test_chaotic_tanh_correlation_fixed_point():
    w, b = 2.5, 0.1
    out = T.summary("tanh", w, b)
    assert out["phase"] == "chaotic" and out["chi1"] > 1 and 0 < out["c_star"] < 1
    q, c = out["q_star"], out["c_star"]
    z1, z2 = np.meshgrid(Z, Z)
    wz = np.outer(WZ, WZ)
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    assert abs((w * np.sum(wz * np.tanh(u1) * np.tanh(u2)) + b) / q - c) < 1e-9
    chi_c = w * np.sum(wz * np.cosh(u1) ** -2 * np.cosh(u2) ** -2)
    assert abs(out["chi_c"] - chi_c) < 1e-9 and out["chi_c"] < 1
    assert out["xi_c"] == pytest.approx(-1 / math.log(chi_c), rel=1e-7)
    assert out["trainable_depth"] == pytest.approx(6 * out["xi_c"])
    assert set(out) >= {"q_star", "c_star", "chi1", "chi_c", "xi_q", "xi_c", "critical_sigma_w2",
                        "trainable_depth"}


def test_no_fixed_point_is_a_one_line_error():
    one_line_error(T.q_star, "relu", 3.0, 0.0, match="no fixed point")
    one_line_error(T.chi1, "relu", 3.0, 0.1, match="no fixed point")
    one_line_error(T.summary, "identity", 1.0, 0.1, match="no fixed point")
    one_line_error(T.depth_scales, "identity", 1.5, 0.0, match="no fixed point")


def test_no_critical_point_is_a_one_line_error():
    # relu and identity are scale-free: with sigma_b2 > 0, q* is finite only while chi1 < 1,
    # so chi1 = 1 (at sigma_w2 = 2, resp. 1) comes with q growing without bound.
    one_line_error(T.critical_sigma_w2, "relu", 0.1, match="no critical sigma_w2")
    one_line_error(T.critical_sigma_w2, "identity", 0.2, match="no critical sigma_w2")
    crit = T.edge_of_chaos("relu", [0.0, 0.1])
    assert crit[0] == pytest.approx(2.0, abs=1e-6) and math.isnan(crit[1])


def test_activation_forms_agree():
    w, b, alpha = 1.6, 0.2, 0.2
    forms = ["leaky_relu", A.spec("leaky_relu", alpha=alpha),
             lambda x: jnp.where(x > 0, x, alpha * x)]
    chi = w * (1 + alpha**2) / 2  # E[phi'^2] for a leaky relu
    for act in forms:
        params = {"alpha": alpha} if act == "leaky_relu" else None
        assert T.chi1(act, w, b, params=params) == pytest.approx(chi, rel=1e-12)
        assert T.q_star(act, w, b, params=params) == pytest.approx(b / (1 - chi), rel=1e-12)
    assert T.chi1("custom_acts:bent_identity", 0.8, 0.1) > 0


# ------------------------------------------------------------------ layer by layer

def test_predict_layers_for_relu_against_recursion():
    w, b, q0, c0, depth = 1.8, 0.05, 1.5, 0.2, 12
    out = T.predict_layers("relu", w, b, q0, depth, c0=c0)
    q, cov = w * q0 + b, w * c0 * q0 + b
    for layer in range(depth):
        if layer:
            cov = w * arccos_kernel(q, cov / q) + b
            q = w * q / 2 + b
        assert out["q"][layer] == pytest.approx(q, rel=1e-12)
        assert out["c"][layer] == pytest.approx(cov / q, abs=1e-12)
    np.testing.assert_allclose(out["chi1"], w / 2, rtol=1e-12)
    np.testing.assert_allclose(out["grad_ratio"], (w / 2) ** np.arange(depth - 1, -1, -1))
    pair = T.predict_layers("relu", w, b, (1.0, 3.0), 3)
    assert pair["q"].shape == (3, 2) and pair["q"][0] == pytest.approx([w + b, 3 * w + b])


def _gelu(h):
    return 0.5 * h * (1 + sps.erf(h / math.sqrt(2)))


def _dgelu(h):
    return 0.5 * (1 + sps.erf(h / math.sqrt(2))) + h * np.exp(-h * h / 2) / math.sqrt(2 * math.pi)


NETS = {  # numpy phi, phi', sigma_w2, sigma_b2
    "tanh": (np.tanh, lambda h: np.cosh(h) ** -2, 2.5, 0.1),  # chaotic: c* = 0.66
    "relu": (lambda h: np.maximum(h, 0), lambda h: (h > 0) * 1.0, 1.2, 0.4),
    "gelu": (_gelu, _dgelu, 1.2, 0.2),
}


def _blocks(fns, h):
    """fns[i] applied to the i-th column block of h."""
    return np.hstack([f(hk) for f, hk in zip(fns, np.hsplit(h, len(fns)), strict=True)])


def _wide_networks(q0, c0, width=2048, n_in=512, depth=20, n_x=6, seed=0):
    """Per-layer mean h^2, mean cosine and backward |g_l|^2 / |g_L|^2 of one random MLP each."""
    e = np.linalg.qr(np.random.default_rng(seed).standard_normal((n_in, n_x + 1)))[0]
    x = math.sqrt(n_in * q0) * (math.sqrt(c0) * e[:, :1] + math.sqrt(1 - c0) * e[:, 1:])
    sw = np.repeat([math.sqrt(v[2]) for v in NETS.values()], n_x)  # one column block each
    sb = np.repeat([math.sqrt(v[3]) for v in NETS.values()], n_x)
    y, hs = np.tile(x, len(NETS)), []
    for layer in range(depth):  # weights N(0, sigma_w2 / fan_in), shared by the activations
        rng = np.random.default_rng([seed, layer])
        W = rng.standard_normal((width, y.shape[0]), dtype=np.float32)
        hs.append(sw / math.sqrt(y.shape[0]) * (W @ y.astype(np.float32))
                  + sb * rng.standard_normal((width, 1)))
        y = _blocks([v[0] for v in NETS.values()], hs[-1])
    dphi = [v[1] for v in NETS.values()]
    g = _blocks(dphi, hs[-1]) * np.random.default_rng(seed).standard_normal(hs[-1].shape)
    norms = [(g**2).sum(0)]
    for layer in range(depth - 1, 0, -1):  # backprop through the same weights, regenerated
        W = np.random.default_rng([seed, layer]).standard_normal((width, width), dtype=np.float32)
        g = _blocks(dphi, hs[layer - 1]) * (sw / math.sqrt(width) * (W.T @ g.astype(np.float32)))
        norms.append((g**2).sum(0))
    grad = np.array(norms[::-1]) / norms[0]
    off = ~np.eye(n_x, dtype=bool)
    out = {}
    for i, k in enumerate(NETS):
        hk = [h[:, i * n_x:(i + 1) * n_x] for h in hs]
        unit = [h / np.linalg.norm(h, axis=0) for h in hk]
        out[k] = (np.array([np.mean(h**2) for h in hk]),
                  np.array([(u.T @ u)[off].mean() for u in unit]),
                  grad[:, i * n_x:(i + 1) * n_x].mean(1))
    return out


def test_wide_networks_follow_predict_layers():
    q0, c0, depth = 2.0, 0.3, 20
    measured = _wide_networks(q0, c0, depth=depth)
    # Tolerances are about 4 standard deviations of the finite-width (2048) fluctuations, which
    # accumulate over layers: q about 5% per layer, c 0.02, the log gradient ratio 0.15.
    for k, (_, _, w, b) in NETS.items():
        q, c, grad = measured[k]
        pred = T.predict_layers(k, w, b, q0, depth, c0=c0)
        np.testing.assert_allclose(q, pred["q"], rtol=0.2, err_msg=k)
        np.testing.assert_allclose(c, pred["c"], atol=0.07, err_msg=k)
        np.testing.assert_allclose(np.log(grad), np.log(pred["grad_ratio"]), atol=0.5, err_msg=k)
        assert abs(np.mean(q / pred["q"] - 1)) < 0.06, k  # no systematic bias


def test_phase_diagram():
    w, b = np.array([0.8, 1.5, 2.5]), np.array([0.0, 0.1])
    out = T.phase_diagram("tanh", w, b)
    assert out["chi1"].shape == out["xi_c"].shape == out["c_star"].shape == (2, 3)
    for i, bb in enumerate(b):
        for j, ww in enumerate(w):
            assert out["chi1"][i, j] == pytest.approx(T.chi1("tanh", ww, bb), rel=1e-12)
            assert out["xi_c"][i, j] == pytest.approx(T.depth_scales("tanh", ww, bb)[1], rel=1e-9)
    np.testing.assert_allclose(out["critical_sigma_w2"], T.edge_of_chaos("tanh", b), rtol=1e-12)
    ordered = out["chi1"] < 1
    assert np.all(out["c_star"][ordered] == 1) and np.all(out["c_star"][~ordered] < 1)
