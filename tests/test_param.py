"""Width parametrizations (model.param) of the MLP against hand-computed tables.

A 3-layer MLP (input 40 -> 256 -> 256 -> 10, m = 256 / 64 = 4): initial standard deviations,
forward multipliers and per-layer learning-rate factors for SGD and Adam, each computed here
from Yang & Hu's tables as microsoft/mup implements them; mup at its base width is sp bitwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab.config import ConfigError
from actlab.engine import experiment, step
from actlab.runs import driver
from conftest import make_config, read_records

D, N, C, BASE = 40, 256, 10, 64
M = N / BASE


def build(param, optimizer="sgd", lr=0.1, width=N):
    cfg = make_config(model={"depth": 2, "width": width, "param": param, "base_width": BASE},
                      dataset={"name": "mnist1d"}, optimizer={"name": optimizer, "lr": lr},
                      train={"batch_size": 64})
    exp = experiment.build(cfg)
    return exp, jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 0}]))


@pytest.mark.parametrize("param", ["sp", "mup", "ntk"])
def test_initial_standard_deviations(param):
    _, s = build(param)
    glorot = 2 / (N + C)  # the MLP's readout: Glorot normal
    want = {"sp": {"in_kernel": 2 / D, "hidden1_kernel": 2 / N, "out_kernel": glorot},
            "mup": {"in_kernel": 2 / D, "hidden1_kernel": 2 / N, "out_kernel": M * glorot},
            "ntk": {"in_kernel": 2.0, "hidden1_kernel": 2.0, "out_kernel": N * glorot}}[param]
    for name, var in want.items():
        w = np.asarray(s.params[name], np.float64)
        # the sample std of n draws has relative standard error ~ 1/sqrt(2n); 5 of them allowed
        assert np.std(w) == pytest.approx(np.sqrt(var), rel=5 / np.sqrt(2 * w.size)), name


@pytest.mark.parametrize("param", ["mup", "ntk"])
def test_forward_multipliers(param):
    exp, s = build(param)
    x = np.asarray(exp.dataset.x_train[:8], np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), s.params)
    c_in, c_hid, c_out = {"mup": (1, 1, 1 / M),
                          "ntk": (1 / np.sqrt(D), 1 / np.sqrt(N), 1 / np.sqrt(N))}[param]
    h = np.maximum(c_in * (x @ p["in_kernel"]) + p["in_bias"], 0)
    h = np.maximum(c_hid * (h @ p["hidden1_kernel"]) + p["hidden1_bias"], 0)
    want = c_out * (h @ p["out_kernel"]) + p["out_bias"]
    got = exp.model.apply(s.params, s.model_state, jnp.asarray(x, jnp.float32))[0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


# factor on each parameter's update: mup SGD scales vector-like weights by m, Adam the
# matrix-like (hidden) ones by 1/m; sp and ntk leave every rate alone
FACTORS = {
    ("mup", "sgd"): {"in_kernel": M, "in_bias": M, "hidden1_kernel": 1, "hidden1_bias": M,
                     "out_kernel": M, "out_bias": 1},
    ("mup", "adam"): {"in_kernel": 1, "in_bias": 1, "hidden1_kernel": 1 / M, "hidden1_bias": 1,
                      "out_kernel": 1, "out_bias": 1},
    ("ntk", "adam"): dict.fromkeys(("in_kernel", "in_bias", "hidden1_kernel", "hidden1_bias",
                                    "out_kernel", "out_bias"), 1),
}


@pytest.mark.parametrize("param,optimizer", sorted(FACTORS))
def test_per_layer_learning_rates(param, optimizer):
    lr = 0.1 if optimizer == "sgd" else 1e-3
    exp, s = build(param, optimizer, lr)
    x = jnp.asarray(exp.dataset.x_train[:64])
    y = jnp.asarray(exp.dataset.y_train[:64])
    loss = step.loss_fn(exp.model, exp.head)
    new, out = step.train_step(s, (x, y), None, model=exp.model, tx=exp.tx, loss_fn=loss)
    for name, f in FACTORS[param, optimizer].items():
        g = np.asarray(out["grads"][name], np.float64)
        # SGD: -lr g; Adam's first step: -lr g / (|g| + eps), i.e. -lr sign(g) where g != 0
        base = g if optimizer == "sgd" else g / (np.abs(g) + 1e-8)
        moved = np.asarray(new.params[name], np.float64) - np.asarray(s.params[name])
        np.testing.assert_allclose(moved, -lr * f * base, rtol=2e-3, atol=1e-7, err_msg=name)


def test_mup_at_its_base_width_is_sp_bitwise(tmp_path):
    def records(param):
        cfg = make_config(model={"depth": 2, "width": BASE, "param": param,
                                 "base_width": BASE}, train={"steps": 10, "log_every": 5})
        driver.run(cfg, tmp_path / param)
        return [{k: v for k, v in r.items() if k != "wall_time"}
                for r in read_records(tmp_path / param)]

    assert records("mup") == records("sp")


def test_an_unknown_parametrization_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="model.param") as e:
        make_config(model={"param": "mu"})
    assert "\n" not in str(e.value)


def logit_change(param, width, steps=3, lr=1e-3):
    """RMS over probe examples and classes of f_T - f_0 after `steps` Adam steps."""
    exp, s0 = build(param, "adam", lr, width)
    x = jnp.asarray(exp.dataset.x_train[:256])
    y = jnp.asarray(exp.dataset.y_train[:256])
    loss = step.loss_fn(exp.model, exp.head)
    s = s0
    for t in range(steps):
        s, _ = step.train_step(s, (x[64 * t:64 * (t + 1)], y[64 * t:64 * (t + 1)]), None,
                               model=exp.model, tx=exp.tx, loss_fn=loss)
    f0 = exp.model.apply(s0.params, s0.model_state, x)[0]
    f1 = exp.model.apply(s.params, s.model_state, x)[0]
    return float(jnp.sqrt(jnp.mean(jnp.square(f1 - f0))))


def test_coordinate_check_of_the_output_sp_grows_with_width_mup_does_not():
    # Adam moves every readout weight by ~lr: under sp the logits change by ~ lr n (slope 1
    # in log width), under mup the readout's 1/m multiplier cancels the n (slope 0), so the
    # slopes differ by 1 in the linear regime; at these finite widths part of the sum over
    # units is incoherent (~ sqrt(n)), which lowers both slopes alike
    widths = [64, 128, 256, 512]
    logw = np.log(widths)
    slope = {p: np.polyfit(logw, np.log([logit_change(p, w) for w in widths]), 1)[0]
             for p in ("sp", "mup")}
    assert slope["sp"] > 0.5
    assert slope["mup"] < 0.1
    assert 0.75 < slope["sp"] - slope["mup"] < 1.35
