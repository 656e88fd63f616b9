"""The registry against independent float64 numpy formulas and the known values of FACTS.md."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations as A

LAM, ALP = 1.0507009873554805, 1.6732632423543772
_erf = np.vectorize(math.erf)


def sig(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def Phi(x):
    return 0.5 * (1 + _erf(x / math.sqrt(2)))


def phi_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


C = math.sqrt(2 / math.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(C * (x + 0.044715 * x**3)))


def _gelu_tanh_d(x):
    u = C * (x + 0.044715 * x**3)
    return 0.5 * (1 + np.tanh(u)) + 0.5 * x * (1 - np.tanh(u) ** 2) * C * (1 + 3 * 0.044715 * x**2)


# name -> (params, phi, phi') in float64 numpy, written from the textbook formulas.
REF = {
    "identity": ({}, lambda x: x, lambda x: np.ones_like(x)),
    "sigmoid": ({}, sig, lambda x: sig(x) * (1 - sig(x))),
    "tanh": ({}, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": ({}, lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
    # crelu's phi is relu's; the layer applies it to [z, -z] (tests/test_crelu.py)
    "crelu": ({}, lambda x: np.maximum(x, 0), lambda x: (x > 0) * 1.0),
    "leaky_relu": ({"alpha": 0.1}, lambda x: np.where(x > 0, x, 0.1 * x),
                   lambda x: np.where(x > 0, 1.0, 0.1)),
    "elu": ({"alpha": 0.7}, lambda x: np.where(x > 0, x, 0.7 * np.expm1(np.minimum(x, 0))),
            lambda x: np.where(x > 0, 1.0, 0.7 * np.exp(np.minimum(x, 0)))),
    "selu": ({}, lambda x: LAM * np.where(x > 0, x, ALP * np.expm1(np.minimum(x, 0))),
             lambda x: LAM * np.where(x > 0, 1.0, ALP * np.exp(np.minimum(x, 0)))),
    "celu": ({"alpha": 2.0},
             lambda x: np.maximum(0, x) + np.minimum(0, 2.0 * np.expm1(np.minimum(x, 0) / 2.0)),
             lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / 2.0))),
    "gelu": ({}, lambda x: x * Phi(x), lambda x: Phi(x) + x * phi_pdf(x)),
    "swish": ({"beta": 1.7}, lambda x: x * sig(1.7 * x),
              lambda x: sig(1.7 * x) + 1.7 * x * sig(1.7 * x) * (1 - sig(1.7 * x))),
    "silu": ({}, lambda x: x * sig(x), lambda x: sig(x) + x * sig(x) * (1 - sig(x))),
    "mish": ({}, lambda x: x * np.tanh(softplus(x)),
             lambda x: np.tanh(softplus(x)) + x * (1 - np.tanh(softplus(x)) ** 2) * sig(x)),
    "softplus": ({}, softplus, sig),
    "softsign": ({}, lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2),
    "hard_sigmoid": ({}, lambda x: np.clip(x + 3, 0, 6) / 6,
                     lambda x: np.where(np.abs(x) < 3, 1 / 6, 0.0)),
    "hard_swish": ({}, lambda x: x * np.clip(x + 3, 0, 6) / 6,
                   lambda x: np.where(x < -3, 0.0, np.where(x > 3, 1.0, (2 * x + 3) / 6))),
    "relu6": ({}, lambda x: np.clip(x, 0, 6), lambda x: ((x > 0) & (x < 6)) * 1.0),
    "hard_tanh": ({}, lambda x: np.clip(x, -1, 1), lambda x: (np.abs(x) < 1) * 1.0),
    "squareplus": ({"b": 4.0}, lambda x: 0.5 * (x + np.sqrt(x * x + 4)),
                   lambda x: 0.5 * (1 + x / np.sqrt(x * x + 4))),
    "sparse_plus": ({}, lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
                    lambda x: np.where(x <= -1, 0, np.where(x >= 1, 1, (x + 1) / 2))),
    "tanhshrink": ({}, lambda x: x - np.tanh(x), lambda x: np.tanh(x) ** 2),
    "log_sigmoid": ({}, lambda x: -softplus(-x), lambda x: sig(-x)),
}
GELU_TANH = ({"approximate": True}, _gelu_tanh, _gelu_tanh_d)
PRELU = ({"alpha": 0.25}, lambda x: np.where(x > 0, x, 0.25 * x),
         lambda x: np.where(x > 0, 1.0, 0.25))
HIDDEN = A.names(include_output=False)
ELEMENTWISE = [n for n in HIDDEN if not A.info(n).gated]  # gated units: test_activations_modern
# the functions of today's models, checked against float64 in test_activations_modern.py
MODERN = {"relu2", "quick_gelu", "xielu", "rational", "smish", "aptx"}


def _points(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 3, n), rng.uniform(-30, 30, n),
                        [-1e4, -1e3, -100, -20, 20, 100, 1e3, 1e4]])
    # keep away from kinks (where phi' is one-sided) for the derivative check
    kinks = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 6.0])
    return x[np.min(np.abs(x[:, None] - kinks), 1) > 1e-3]


def _spec_and_learned(name, params):
    sp = A.spec(name, **params)
    return sp, {k: jnp.float32(v) for k, v in sp.learned.items()}


def test_reference_covers_every_hidden_activation():
    assert set(ELEMENTWISE) == set(REF) | {"prelu"} | MODERN


@pytest.mark.parametrize("name", sorted(REF) + ["gelu_tanh", "prelu"])
def test_phi_and_derivative_match_float64_reference(name):
    params, f, df = {"gelu_tanh": GELU_TANH, "prelu": PRELU}.get(name) or REF[name]
    name = "gelu" if name == "gelu_tanh" else name
    sp, learned = _spec_and_learned(name, params)
    x = _points()
    y = np.asarray(sp(jnp.asarray(x, jnp.float32), **learned), np.float64)
    ref = f(x)
    np.testing.assert_allclose(y, ref, rtol=3e-6, atol=2e-6)
    g = jax.vmap(jax.grad(lambda u: sp(u, **learned)))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(g, np.float64), df(x), rtol=2e-5, atol=2e-6)
    # Spec.derivative (used by the metrics) agrees with jax.grad.
    np.testing.assert_allclose(np.asarray(sp.derivative(jnp.asarray(x, jnp.float32), **learned)),
                               np.asarray(g), rtol=1e-6, atol=1e-7)


def test_known_values():
    sig_ = A.spec("sigmoid")
    assert float(jax.grad(sig_)(0.0)) == 0.25
    assert float(jax.grad(A.spec("tanh"))(0.0)) == 1.0
    assert float(jax.grad(A.spec("relu"))(0.0)) == 0.0  # jax's convention, as FACTS.md says
    x = np.linspace(-3, 0, 300_001)
    for name, params, x_min, y_min in [("gelu", {}, -0.7518, -0.1700),
                                       ("swish", {"beta": 1.0}, -1.2785, -0.2785),
                                       ("silu", {}, -1.2785, -0.2785),
                                       ("mish", {}, -1.1924, -0.3088)]:
        y = np.asarray(A.spec(name, **params)(jnp.asarray(x, jnp.float32)))
        assert abs(x[np.argmin(y)] - x_min) < 2e-3, name
        assert abs(y.min() - y_min) < 1e-4, name
    np.testing.assert_allclose(float(A.spec("selu")(1.0)), LAM, rtol=1e-7)
    np.testing.assert_allclose(float(A.spec("selu")(-50.0)), -LAM * ALP, rtol=1e-6)
    assert A.SELU_LAMBDA == pytest.approx(LAM, abs=1e-15)
    assert A.SELU_ALPHA == pytest.approx(ALP, abs=1e-15)


def test_gelu_forms_differ_by_less_than_1e_3_but_are_not_identical():
    x = jnp.linspace(-10, 10, 200_001)
    d = np.abs(np.asarray(A.spec("gelu")(x)) - np.asarray(A.spec("gelu", approximate=True)(x)))
    assert 0 < d.max() < 1e-3


def test_swish_tends_to_relu_for_large_beta_and_half_x_for_zero_beta():
    x = jnp.linspace(-5, 5, 10_001)
    assert np.max(np.abs(np.asarray(A.spec("swish", beta=50.0)(x)) - np.maximum(x, 0))) < 0.02
    np.testing.assert_allclose(np.asarray(A.spec("swish", beta=0.0)(x)), np.asarray(x) / 2)


def test_no_overflow():
    assert float(A.spec("softplus")(1000.0)) == 1000.0
    assert float(A.spec("sigmoid")(-1000.0)) == 0.0
    sm = A.get("softmax")
    np.testing.assert_array_equal(np.asarray(sm(jnp.array([1000.0, 0.0]))), [1.0, 0.0])
    np.testing.assert_allclose(np.asarray(A.get("log_softmax")(jnp.array([1000.0, 0.0]))),
                               [0.0, -1000.0])
    for dt in (jnp.float32, jnp.bfloat16):
        assert float(A.spec("softplus")(jnp.asarray(1000.0, dt))) == 1000.0
        assert float(A.spec("sigmoid")(jnp.asarray(-1000.0, dt))) == 0.0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_finite_values_and_gradients_everywhere(name, dtype):
    sp, learned = _spec_and_learned(name, {})
    learned = {k: v.astype(dtype) for k, v in learned.items()}
    x = jnp.asarray([-1e4, -100.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 100.0, 1e4], dtype)
    y = sp(x, **learned)
    assert y.dtype == dtype
    assert np.all(np.isfinite(np.asarray(y, np.float32)))
    g = jax.vmap(jax.grad(lambda u: sp(u, **learned)))(x)
    assert np.all(np.isfinite(np.asarray(g, np.float32)))
    if learned:  # gradients with respect to the learnable parameters too
        gp = jax.grad(lambda p: jnp.sum(sp(x, **p)))(learned)
        assert all(np.isfinite(float(v)) for v in gp.values())


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_metadata_is_consistent_with_the_function(name):
    sp, learned = _spec_and_learned(name, {})
    inf = A.info(name)
    x = jnp.linspace(-30, 30, 600_001)
    y = np.asarray(sp(x, **learned))
    d = np.asarray(sp.derivative(x, **learned))
    lo, hi = inf.output_range
    assert y.min() >= lo - 2e-3 and y.max() <= hi + 2e-3
    dlo, dhi = inf.deriv_range
    assert d.min() >= dlo - 2e-3 and d.max() <= dhi + 2e-3
    assert inf.monotone == bool(np.all(np.diff(y) >= -1e-6))
    if inf.can_die:  # phi' is exactly zero somewhere
        assert np.any(d == 0)
    if inf.saturation is not None:  # phi' becomes small on a tail
        assert np.min(np.abs(d)) < 0.01 * np.max(np.abs(d))
    assert inf.formula


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(A.ActivationError) as e:
        A.get("relux")
    msg = str(e.value)
    assert "relux" in msg and "gelu" in msg and "tanh" in msg and "\n" not in msg


def test_unknown_parameter_is_rejected():
    with pytest.raises(A.ActivationError, match="alpha"):
        A.get("relu", alpha=0.1)


def test_get_returns_jitted_callables_and_modules():
    f = A.get("leaky_relu", alpha=0.2)
    np.testing.assert_allclose(np.asarray(f(jnp.array([-1.0, 2.0]))), [-0.2, 2.0])
    m = A.get("prelu")
    import flax.linen as nn

    assert isinstance(m, nn.Module)
    variables = m.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
    assert float(variables["params"]["alpha"]) == 0.25
    out = m.apply({"params": {"alpha": jnp.float32(0.5)}}, jnp.array([[-2.0, 1.0]]))
    np.testing.assert_allclose(np.asarray(out), [[-1.0, 1.0]])
    sw = A.get("swish", learnable=True)
    assert "beta" in sw.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))["params"]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(A, "_REGISTRY", A._REGISTRY.copy())


def test_register_a_custom_activation(scratch_registry):
    @A.register("test_cube_root", formula=r"x^{1/3}", monotone=True)
    def cube_root(z):
        return jnp.cbrt(z)

    assert "test_cube_root" in A.names()
    np.testing.assert_allclose(float(A.get("test_cube_root")(27.0)), 3.0, rtol=1e-6)


def test_activation_by_import_path(scratch_registry):
    f = A.get("custom_acts:bent_identity")
    x = np.array([-2.0, 0.5, 3.0])
    np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))),
                               (np.sqrt(x**2 + 1) - 1) / 2 + x, rtol=1e-6)
    with pytest.raises(A.ActivationError, match="cannot import"):
        A.get("no_such_module_xyz:fn")


def test_activations_command_prints_table_and_plots(tmp_path, capsys):
    from actlab.analysis import plots
    from actlab.cli import activations_main

    activations_main([])
    out = capsys.readouterr().out
    for name in A.names():
        assert name in out
    fig = plots.activation_grid(HIDDEN)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(HIDDEN)
    assert all(len(ax.lines) == 4 for ax in visible)  # two reference axes + phi + phi'
    assert {ax.get_title() for ax in visible} == set(HIDDEN)
    png = tmp_path / "acts.png"
    activations_main(["--plot", str(png)])
    assert png.stat().st_size > 10_000
