"""init=critical and the init.sigma_w2 / init.sigma_b2 overrides: drawn variances, chi1 = 1,
one-line errors, and defaults that leave every initial parameter bitwise as it was."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import data, models, theory
from actlab.config import ConfigError
from actlab.engine import experiment
from conftest import make_config


def dataset(shape: tuple[int, ...], n: int = 4) -> data.Dataset:
    x = np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)
    y = np.arange(n, dtype=np.int32) % 2
    return data.Dataset(name="noise", x_train=x, y_train=y, x_test=x, y_test=y, num_classes=2,
                        mean=np.zeros(shape[-1:], np.float32),
                        std=np.ones(shape[-1:], np.float32))


def built(shape=(64,), seed=0, **sections):
    """The experiment for a config (TINY plus `sections`) and its initial parameters."""
    exp = experiment.build(make_config(**sections), dataset(shape))
    params, _ = exp.model.init(jax.random.PRNGKey(seed), jnp.zeros((1, *shape)))
    return exp, jax.tree.map(np.asarray, params)


def sigma2(w: np.ndarray) -> float:
    """Empirical E[w^2] x fan_in of one kernel [..., fan_in, fan_out] (conv: kh x kw x in)."""
    return float(np.mean(w.astype(np.float64) ** 2) * np.prod(w.shape[:-1]))


def test_critical_tanh_is_on_the_edge_of_chaos():
    b2 = 0.05
    exp, p = built(activation={"name": "tanh"}, model={"depth": 3, "width": 1024},
                   init={"name": "critical", "sigma_b2": b2})
    used = exp.model.module.sigma_w2  # what the model was built with
    assert isinstance(used, float)
    assert used == pytest.approx(theory.critical_sigma_w2("tanh", b2), rel=1e-12)
    assert theory.chi1("tanh", used, b2) == pytest.approx(1.0, abs=1e-4)
    assert 1.0 < used < 2.0
    for w in (p["in_kernel"], p["hidden1_kernel"], p["hidden2_kernel"]):
        assert sigma2(w) == pytest.approx(used, rel=0.03)
    assert np.mean(p["hidden1_kernel"]) == pytest.approx(0.0, abs=1e-3)
    biases = np.concatenate([p["in_bias"], p["hidden1_bias"], p["hidden2_bias"]])
    assert np.var(biases) == pytest.approx(b2, rel=0.12)
    assert np.all(p["out_bias"] == 0)  # the output layer keeps its own init (glorot, zeros)
    assert np.var(p["out_kernel"]) == pytest.approx(2 / (1024 + 2), rel=0.1)


def test_critical_relu_without_bias_variance_is_he():
    exp, crit = built(model={"depth": 3, "width": 256}, init={"name": "critical"})
    assert exp.model.module.sigma_w2 == pytest.approx(2.0, abs=1e-9)
    _, he = built(model={"depth": 3, "width": 256}, init={"name": "he"})
    for k in he:
        np.testing.assert_allclose(crit[k], he[k], rtol=1e-6, atol=0, err_msg=k)
    assert sigma2(crit["hidden1_kernel"]) == pytest.approx(2.0, rel=0.02)


def test_critical_per_layer_takes_the_activation_feeding_the_layer():
    exp, p = built(model={"depth": 3, "width": 512, "activations": ["tanh", "relu", "relu"]},
                   init={"name": "critical"})
    tanh, relu = (theory.critical_sigma_w2(a, 0.0) for a in ("tanh", "relu"))
    assert tanh == pytest.approx(1.0, abs=1e-6) and relu == pytest.approx(2.0, abs=1e-6)
    assert exp.model.module.sigma_w2 == pytest.approx((tanh, tanh, relu), abs=1e-9)
    assert sigma2(p["hidden1_kernel"]) == pytest.approx(tanh, rel=0.02)
    assert sigma2(p["hidden2_kernel"]) == pytest.approx(relu, rel=0.02)


@pytest.mark.parametrize("dist", ["normal", "truncated_normal", "uniform"])
def test_explicit_variances_mlp(dist):
    w2, b2, gain = 1.7, 0.3, 0.8
    _, p = built(model={"depth": 10, "width": 256},  # scanned: a [9, W, W] stack
                 init={"name": "glorot", "distribution": dist, "gain": gain, "sigma_w2": w2,
                       "sigma_b2": b2})
    assert p["hidden_kernel"].shape == (9, 256, 256)
    for w in (p["in_kernel"], p["hidden_kernel"][0], p["hidden_kernel"][-1]):
        assert sigma2(w) == pytest.approx(gain**2 * w2, rel=0.03)
    bias = np.concatenate([p["in_bias"], p["hidden_bias"].ravel()])
    assert np.var(bias) == pytest.approx(b2, rel=0.12)
    assert np.all(p["out_bias"] == 0)


def test_explicit_variances_cnn():
    w2, b2 = 0.6, 0.2
    _, p = built(shape=(8, 8, 3), model={"name": "cnn", "depth": 4, "channels": 64},
                 init={"name": "he", "sigma_w2": w2, "sigma_b2": b2})
    assert p["layer1"]["kernel"].shape == (3, 3, 64, 64)
    for l in range(4):  # fan_in = 3 * 3 * in_channels
        assert sigma2(p[f"layer{l}"]["kernel"]) == pytest.approx(w2, rel=0.05 if l else 0.1)
    bias = np.concatenate([p[f"layer{l}"]["bias"] for l in range(4)])
    assert np.var(bias) == pytest.approx(b2, rel=0.3)
    assert np.all(p["out"]["bias"] == 0)


def test_explicit_variance_orthogonal_keeps_orthogonality():
    _, p = built((32,), model={"depth": 2, "width": 64},
                 init={"name": "orthogonal", "sigma_w2": 2.0})
    k = p["hidden1_kernel"].astype(np.float64)
    np.testing.assert_allclose(k.T @ k, 2.0 * np.eye(64), atol=1e-4)
    k_in = p["in_kernel"].astype(np.float64)  # [32, 64]: orthogonal rows
    np.testing.assert_allclose(k_in @ k_in.T, 2.0 * 2 * np.eye(32), atol=1e-4)
    assert sigma2(k_in) == pytest.approx(2.0, rel=1e-5)


def test_no_critical_point_is_one_line():
    with pytest.raises(models.ModelError) as e:
        built(init={"name": "critical", "sigma_b2": 0.1})
    msg = str(e.value)
    assert msg.startswith("init=critical: no critical sigma_w2 for relu at sigma_b2=0.1")
    assert "\n" not in msg
    with pytest.raises(models.ModelError, match="differs per member"):
        built(activation={"name": "leaky_relu"}, init={"name": "critical"},
              train={"vmap": {"activation": {"alpha": [0.1, 0.2]}}})


@pytest.mark.parametrize(("init", "message"), [
    ({"sigma_w2": 0}, "init.sigma_w2 must be > 0, got 0"),
    ({"sigma_w2": "big"}, "init.sigma_w2 must be a number, got 'big'"),
    ({"sigma_b2": -0.5}, "init.sigma_b2 must be >= 0, got -0.5"),
    ({"name": "critical", "sigma_w2": 2.0}, "init.sigma_w2=2 cannot be set with init=critical"),
])
def test_bad_variances_are_config_errors(init, message):
    with pytest.raises(ConfigError) as e:
        make_config(init=init)
    assert message in str(e.value) and "\n" not in str(e.value)


MODELS = [
    ((64,), {"depth": 10, "width": 16}),  # scanned MLP
    ((64,), {"depth": 3, "width": 16}),  # unrolled MLP
    ((8, 8, 2), {"name": "cnn", "depth": 2, "channels": 8}),
    ((8, 8, 2), {"name": "transformer", "depth": 1, "dim": 16, "heads": 2}),
]


@pytest.mark.parametrize(("shape", "model"), MODELS)
def test_defaults_leave_parameters_bitwise_unchanged(shape, model):
    exp, plain = built(shape, model=model, init={"name": "auto"})
    _, explicit = built(shape, model=model, init={"name": "auto", "sigma_w2": None,
                                                  "sigma_b2": 0.0})
    sp = exp.specs
    legacy = models.build(exp.config.model.name, specs=sp, num_classes=2, input_shape=shape,
                          init=(experiment.resolved_init(exp.config, sp).name, "normal", 1.0),
                          **exp.config.model.params)
    old, _ = legacy.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
    for other in (explicit, jax.tree.map(np.asarray, old)):
        assert jax.tree.structure(other) == jax.tree.structure(plain)
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(other), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    # a bias variance changes the hidden Dense/Conv biases only: every other parameter keeps
    # its key (norm and attention biases are not a hidden layer's bias)
    _, biased = built(shape, model=model, init={"name": "auto", "sigma_b2": 0.1})
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(plain), jax.tree.leaves(biased),
                            strict=True):
        top, last = str(path[0].key), str(path[-1].key)
        hidden_bias = (re.fullmatch(r"in_bias|hidden\d*_bias", top) is not None
                       or (re.fullmatch(r"layer\d+(_fc2)?", top) is not None and last == "bias"))
        assert np.array_equal(a, b) != hidden_bias, jax.tree_util.keystr(path)


def test_scanned_and_unrolled_mlp_draw_the_same_biases():
    cfg = {"init": {"name": "he", "sigma_b2": 0.4, "sigma_w2": 1.5}}
    _, scan = built(model={"depth": 3, "width": 16, "scan_layers": True}, **cfg)
    _, unrolled = built(model={"depth": 3, "width": 16, "scan_layers": False}, **cfg)
    for l in (1, 2):
        np.testing.assert_array_equal(scan["hidden_bias"][l - 1], unrolled[f"hidden{l}_bias"])
        np.testing.assert_array_equal(scan["hidden_kernel"][l - 1],
                                      unrolled[f"hidden{l}_kernel"])
    assert np.all(scan["hidden_bias"] != 0)
