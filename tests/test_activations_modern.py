"""Today's activations and the gated units against independent float64 numpy formulas."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations as A

_erf = np.vectorize(math.erf)


def sig(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def Phi(x):
    return 0.5 * (1 + _erf(x / math.sqrt(2)))


def xielu_ref(a_p, a_n, beta, eps=-1e-6):
    ap, an = softplus(a_p), beta + softplus(a_n)

    def f(x):
        return np.where(x > 0, ap * x * x + beta * x,
                        an * (np.expm1(np.minimum(x, eps)) - x) + beta * x)

    def df(x):
        return np.where(x > 0, 2 * ap * x + beta,
                        np.where(x < eps, an * np.expm1(np.minimum(x, eps)) + beta, beta - an))

    return f, df


def aptx_ref(alpha, beta, gamma):
    def f(x):
        return (alpha + np.tanh(beta * x)) * gamma * x

    def df(x):
        t = np.tanh(beta * x)
        return gamma * (alpha + t) + gamma * x * beta * (1 - t * t)

    return f, df


def smish(x):
    return x * np.tanh(np.log1p(sig(x)))


def smish_d(x):
    s = sig(x)
    t = np.tanh(np.log1p(s))
    return t + x * (1 - t * t) * s * (1 - s) / (1 + s)


def rational_ref(c):
    """P/Q with explicit powers, and (P'Q - PQ')/Q^2, Q = 1 + sum |q_k| |x|^k."""
    p, q = np.asarray(c[:6], np.float64), np.abs(np.asarray(c[6:], np.float64))

    def f(x):
        P = sum(p[j] * x**j for j in range(6))
        Q = 1 + sum(q[k - 1] * np.abs(x) ** k for k in range(1, 5))
        return P / Q

    def df(x):
        P = sum(p[j] * x**j for j in range(6))
        dP = sum(j * p[j] * x ** (j - 1) for j in range(1, 6))
        Q = 1 + sum(q[k - 1] * np.abs(x) ** k for k in range(1, 5))
        dQ = np.sign(x) * sum(k * q[k - 1] * np.abs(x) ** (k - 1) for k in range(1, 5))
        return (dP * Q - P * dQ) / Q**2

    return f, df


QG = 1.702
A_P, A_N = math.log(math.expm1(0.8)), math.log(math.expm1(0.3))  # softplus^-1(0.8), (0.3)
RNG_COEFFS = np.random.default_rng(3).normal(0, 1, 10)
RATIONAL_KEYS = ("p0", "p1", "p2", "p3", "p4", "p5", "q1", "q2", "q3", "q4")

# case -> (name, params, phi, phi')
REF = {
    "relu2": ("relu2", {}, lambda x: np.maximum(x, 0) ** 2, lambda x: 2 * np.maximum(x, 0)),
    "quick_gelu": ("quick_gelu", {}, lambda x: x * sig(QG * x),
                   lambda x: sig(QG * x) + QG * x * sig(QG * x) * (1 - sig(QG * x))),
    "smish": ("smish", {}, smish, smish_d),
    "aptx": ("aptx", {}, *aptx_ref(1.0, 1.0, 0.5)),
    "aptx_other": ("aptx", {"alpha": 1.5, "beta": 0.7, "gamma": 0.8}, *aptx_ref(1.5, 0.7, 0.8)),
    "xielu": ("xielu", {}, *xielu_ref(A_P, A_N, 0.5)),
    "xielu_other": ("xielu", {"a_p": -0.3, "a_n": 0.7, "beta": 0.2},
                    *xielu_ref(-0.3, 0.7, 0.2)),
    "xielu_fixed": ("xielu", {"a_p": 1.1, "a_n": -2.0, "beta": 0.9, "learnable": False},
                    *xielu_ref(1.1, -2.0, 0.9)),
    "rational_random": ("rational", dict(zip(RATIONAL_KEYS, RNG_COEFFS.tolist(), strict=True)),
                        *rational_ref(RNG_COEFFS)),
}
NEW = ("relu2", "quick_gelu", "xielu", "rational", "smish", "aptx")
GATED = ("swiglu", "geglu", "reglu", "glu", "bilinear")


def _points(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 3, n), rng.uniform(-30, 30, n), np.linspace(-2, 2, 201),
                        [-1e4, -1e3, -100, -20, 20, 100, 1e3, 1e4]])
    return x[np.abs(x) > 1e-3]  # away from the kinks at 0 (relu2'', xielu's eps window)


def _learned(sp, dtype=jnp.float32):
    return {k: jnp.asarray(v, dtype) for k, v in sp.learned.items()}


def test_registered_with_metadata():
    hidden = A.names(include_output=False)
    for name in NEW + GATED:
        assert name in hidden
        inf = A.info(name)
        assert inf.formula and inf.description
        assert inf.gated == (name in GATED)
    assert A.info("xielu").learnable == ("a_p", "a_n")
    assert A.info("rational").learnable == RATIONAL_KEYS
    assert A.info("relu2").can_die and A.info("relu2").saturation is None
    assert A.info("xielu").saturation is None and A.info("rational").saturation is None
    for name in ("quick_gelu", "smish", "aptx"):  # like silu: a saturating left tail only
        lo, hi = A.info(name).saturation
        assert lo < 0 and hi == math.inf and not A.info(name).monotone


@pytest.mark.parametrize("case", sorted(REF))
def test_phi_and_derivative_match_float64_reference(case):
    name, params, f, df = REF[case]
    sp = A.spec(name, **params)
    learned = _learned(sp)
    x = _points()
    xj = jnp.asarray(x, jnp.float32)
    y = np.asarray(jax.jit(lambda u, p: sp(u, **p))(xj, learned), np.float64)
    np.testing.assert_allclose(y, f(x), rtol=3e-6, atol=2e-6)
    g = np.asarray(jax.jit(jax.vmap(jax.grad(lambda u, p: sp(u, **p)), (0, None)))(xj, learned),
                   np.float64)
    np.testing.assert_allclose(g, df(x), rtol=2e-5, atol=2e-6)
    d = jax.jit(lambda u, p: sp.derivative(u, **p))(xj, learned)
    # forward and reverse mode round differently (each within 2e-5 of the float64 value
    # above, so within twice that of each other; the compiler's fusions decide where)
    np.testing.assert_allclose(np.asarray(d), g, rtol=4e-5, atol=4e-6)


def test_derivatives_agree_with_float64_finite_differences():
    x = np.linspace(-4, 4, 161) + 0.013  # off the kinks
    h = 1e-6
    for case in ("xielu_other", "rational_random", "smish", "aptx_other"):
        _, _, f, df = REF[case]
        np.testing.assert_allclose(df(x), (f(x + h) - f(x - h)) / (2 * h), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NEW)
def test_finite_values_and_gradients_at_large_inputs(name, dtype):
    sp = A.spec(name)
    learned = _learned(sp, dtype)
    x = jnp.asarray([-1e4, -1e3, -1.0, 0.0, 1.0, 1e3, 1e4], dtype)

    @jax.jit
    def run(x, learned):
        y = sp(x, **learned)
        g = jax.vmap(jax.grad(lambda u: sp(u, **learned)))(x)
        return y, g, jax.grad(lambda p: jnp.sum(sp(x, **p)))(learned)

    y, g, gp = run(x, learned)
    assert y.dtype == dtype
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
    assert all(np.isfinite(float(v)) for v in gp.values())  # w.r.t. the learned parameters


@pytest.mark.parametrize("dtype,rtol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_rational_is_accurate_at_large_inputs(dtype, rtol):
    params = dict(zip(RATIONAL_KEYS, RNG_COEFFS.tolist(), strict=True))
    sp = A.spec("rational", learnable=False, **params)
    x = np.array([-1e4, -3e3, -1e3, 1e3, 3e3, 1e4])
    c = np.asarray(jnp.asarray(RNG_COEFFS, dtype), np.float64)  # the coefficients as rounded
    ref = rational_ref(c)[0](np.asarray(jnp.asarray(x, dtype), np.float64))
    y = np.asarray(sp(jnp.asarray(x, dtype)), np.float64)
    np.testing.assert_allclose(y, ref, rtol=rtol)


def test_xielu_at_initialisation():
    sp = A.spec("xielu")
    assert set(sp.learned) == {"a_p", "a_n"} and sp.fixed == {"beta": 0.5, "eps": -1e-6}
    assert softplus(sp.learned["a_p"]) == pytest.approx(0.8, abs=1e-12)
    assert 0.5 + softplus(sp.learned["a_n"]) == pytest.approx(0.8, abs=1e-12)
    # alpha_p + beta = 1.3; alpha_n (e^-1 - 1 + 1) - beta = 0.8/e - 0.5
    np.testing.assert_allclose(float(sp(jnp.float32(1.0))), 1.3, rtol=1e-6)
    np.testing.assert_allclose(float(sp(jnp.float32(-1.0))), 0.8 / math.e - 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(sp(jnp.float32(2.0))), 0.8 * 4 + 1.0, rtol=1e-6)
    for z in (-1e-3, 1e-3):  # phi' = beta on both sides of 0
        assert float(sp.derivative(jnp.float32(z))) == pytest.approx(0.5, abs=2e-3)
    fixed = A.spec("xielu", learnable=False)
    assert fixed.learned == {} and fixed.fixed["a_p"] == pytest.approx(A_P)
    m = A.get("xielu")
    params = m.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))["params"]
    assert set(params) == {"a_p", "a_n"}


@pytest.mark.parametrize("init_like,target,bound", [
    ("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x), 0.02),
    ("relu", lambda x: np.maximum(x, 0), 0.02),
    ("tanh", np.tanh, 1e-4),
    ("silu", lambda x: x * sig(x), 1e-4),
])
def test_rational_fit_approximates_init_like_on_its_interval(init_like, target, bound):
    sp = A.spec("rational", init_like=init_like)
    f = rational_ref([sp.learned[k] for k in RATIONAL_KEYS])[0]
    x = np.linspace(-3, 3, 20_001)
    assert np.max(np.abs(f(x) - target(x))) < bound
    y = np.asarray(sp(jnp.asarray(x, jnp.float32), **_learned(sp)))
    assert np.max(np.abs(y - target(x))) < bound


def test_rational_defaults_and_overrides():
    default = A.spec("rational")
    assert default.fixed == {"init_like": "leaky_relu"}
    assert set(default.learned) == set(RATIONAL_KEYS)
    tanh_fit = A.spec("rational", init_like="tanh").learned
    over = A.spec("rational", init_like="tanh", p0=0.5, q3=-2.0)
    assert over.learned["p0"] == 0.5 and over.learned["q3"] == -2.0
    assert {k: over.learned[k] for k in RATIONAL_KEYS if k not in ("p0", "q3")} == \
        {k: tanh_fit[k] for k in RATIONAL_KEYS if k not in ("p0", "q3")}
    assert tanh_fit != default.learned
    fixed = A.spec("rational", learnable=False, p1=2.0)
    assert fixed.learned == {} and fixed.fixed["p1"] == 2.0
    # learned values not passed take their initial values
    x = jnp.linspace(-2, 2, 11)
    np.testing.assert_array_equal(np.asarray(default(x)),
                                  np.asarray(default(x, **_learned(default))))
    for bad in ("rational", "swiglu", "softmax", "nope"):
        with pytest.raises(A.ActivationError):
            A.spec("rational", init_like=bad)


# --------------------------------------------------------------------------- gated units

def _gpt_oss(zg, zv, limit, alpha=QG):
    """gpt-oss's clamped SwiGLU: x_glu clamped from above, x_linear to [-limit, limit]."""
    g = np.minimum(zg, limit)
    return g * sig(alpha * g) * (np.clip(zv, -limit, limit) + 1)


GLU_REF = {
    "swiglu": ({}, lambda g, v: g * sig(g) * v),
    "geglu": ({}, lambda g, v: g * Phi(g) * v),
    "reglu": ({}, lambda g, v: np.maximum(g, 0) * v),
    "glu": ({}, lambda g, v: sig(g) * v),
    "bilinear": ({}, lambda g, v: g * v),
    "glu_tanh": ({"gate": "tanh"}, lambda g, v: np.tanh(g) * v),
    "swiglu_limit": ({"limit": 7.0}, lambda g, v: _gpt_oss(g, v, 7.0)),
    "geglu_limit": ({"limit": 2.5},
                    lambda g, v: np.minimum(g, 2.5) * Phi(np.minimum(g, 2.5))
                    * (np.clip(v, -2.5, 2.5) + 1)),
    "reglu_limit": ({"limit": 1.0},
                    lambda g, v: np.clip(g, 0, 1) * (np.clip(v, -1, 1) + 1)),
}


@pytest.mark.parametrize("case", sorted(GLU_REF))
def test_glu_matches_numpy(case):
    params, ref = GLU_REF[case]
    sp = A.spec(case.split("_")[0], **params)
    rng = np.random.default_rng(1)
    zg = np.concatenate([rng.normal(0, 4, 500), [-1e3, -10, 0.0, 10, 1e3]])
    zv = np.concatenate([rng.normal(0, 4, 500), [3.0, -20, 1.0, 20, -1e3]])
    h = np.asarray(sp.glu(jnp.asarray(zg, jnp.float32), jnp.asarray(zv, jnp.float32)))
    np.testing.assert_allclose(h, ref(zg, zv), rtol=1e-5, atol=1e-5)
    f = A.get(case.split("_")[0], **params)
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(zg), jnp.asarray(zv))), h, rtol=1e-5,
                               atol=1e-5)


def test_gated_spec_interface():
    sw = A.spec("swiglu")
    assert sw.gated and not A.spec("silu").gated
    assert sw.gate.name == "silu" and A.spec("swiglu", limit=7.0).gate.name == "quick_gelu"
    assert A.spec("geglu").gate.fixed == {"approximate": False}
    assert A.spec("glu").gate.name == "sigmoid" and A.info("glu").gate == "sigmoid"
    assert A.spec("glu", gate="tanh").gate.name == "tanh"
    assert A.spec("glu", gate="tanh").info.gate == "tanh"
    with pytest.raises(A.ActivationError, match="two projections"):
        sw(jnp.ones(3))
    with pytest.raises(A.ActivationError, match="two projections"):
        sw.derivative(jnp.ones(3))
    with pytest.raises(A.ActivationError, match="not a gated"):
        _ = A.spec("relu").gate
    with pytest.raises(A.ActivationError, match="two inputs"):
        A.get("swiglu")(jnp.ones(3))
    for bad in ({"gate": "swiglu"}, {"gate": "softmax"}, {"gate": "nope"}, {"limit": -1.0},
                {"limit": "big"}, {"learnable": True}):
        with pytest.raises(A.ActivationError):
            A.spec("glu", **bad)


def test_gated_metadata_is_the_gates():
    assert A.info("reglu").can_die and A.spec("reglu").info.can_die
    assert not A.info("swiglu").can_die and not A.spec("swiglu").info.can_die
    assert A.spec("swiglu").saturation() == A.spec("silu").saturation()
    assert A.spec("glu").saturation() == (0.0, 0.0)
    assert A.spec("glu", gate="tanh").info.saturation == A.info("tanh").saturation
    assert A.spec("bilinear").saturation() is None
    assert A.spec("reglu").max_abs_derivative() == pytest.approx(1.0)
    assert A.spec("swiglu").max_abs_derivative() == pytest.approx(1.09984, abs=1e-4)
    assert A.spec("glu").max_abs_derivative() == pytest.approx(0.25, abs=1e-6)


def test_glu_with_a_learnable_gate():
    sp = A.spec("glu", gate="prelu")
    assert sp.learned == {"alpha": 0.25}
    zg, zv = jnp.array([-2.0, 1.0]), jnp.array([3.0, 5.0])
    np.testing.assert_allclose(np.asarray(sp.glu(zg, zv)), [-1.5, 5.0])
    np.testing.assert_allclose(np.asarray(sp.glu(zg, zv, alpha=jnp.float32(0.5))), [-3.0, 5.0])
    m = A.get("glu", gate="prelu")
    variables = m.init(jax.random.PRNGKey(0), zg, zv)
    np.testing.assert_allclose(np.asarray(m.apply(variables, zg, zv)), [-1.5, 5.0])


def test_plots_draw_every_registered_name():
    import matplotlib.pyplot as plt

    from actlab.analysis import plots

    hidden = A.names(include_output=False)
    fig = plots.activation_grid(hidden)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == hidden
    gates = {ax.get_title(): ax.get_title(loc="right") for ax in visible}
    assert gates["swiglu"] == "gate: silu" and gates["glu"] == "gate: sigmoid"
    assert gates["relu2"] == ""
    for ax in visible:
        assert all(np.all(np.isfinite(line.get_ydata())) for line in ax.lines)
    fig2 = plots.activation_curves(NEW + GATED)
    labels = fig2.axes[1].get_legend_handles_labels()[1]
    assert "reglu (gate: relu)" in labels and "xielu" in labels
    plt.close(fig)
    plt.close(fig2)
