"""The q/l and c/l metrics: against numpy on captured pre-activations, selection, records,
and against the mean-field prediction (actlab.theory.predict_layers) for a wide network."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from actlab import data, theory
from actlab.engine import experiment, step
from actlab.measure import metrics
from actlab.runs import driver as train
from conftest import make_config, read_records


def dataset(x: np.ndarray) -> data.Dataset:
    y = np.arange(len(x), dtype=np.int32) % 2
    return data.Dataset(name="given", x_train=x, y_train=y, x_test=x, y_test=y, num_classes=2,
                        mean=np.zeros(x.shape[-1:], np.float32),
                        std=np.ones(x.shape[-1:], np.float32))


def member0(cfg, x: np.ndarray):
    exp = experiment.build(cfg, dataset(x))
    return exp, jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 3}]))


def numpy_q_c(zs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """q: mean z^2; c: mean cosine of flattened z over pairs (2i, 2i + 1), i < min(64, P // 2)."""
    q, c = [], []
    for z in zs:
        z = z.reshape(z.shape[0], -1).astype(np.float64)
        k = min(64, z.shape[0] // 2)
        a, b = z[0:2 * k:2], z[1:2 * k:2]
        q.append(np.mean(z**2))
        c.append(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
    return np.array(q), np.array(c)


NO_UPDATE = {"grads": None, "updates": None, "grad_eps": None}  # only q, c, act_* are asked


def measured(exp, state, x, selected=("q", "c")):
    x = np.asarray(x)
    fn = jax.jit(lambda s, x, y: step.measure(s, NO_UPDATE, x, y, model=exp.model, head=exp.head,
                                              selected=selected))
    return jax.device_get(fn(state, x, np.zeros(len(x), np.int32)))


@pytest.mark.parametrize("p", [37, 150])  # K = 18; K = 64 of 75 possible pairs
def test_mlp_q_c_match_numpy(p):
    x = np.random.default_rng(1).standard_normal((p, 5)).astype(np.float32) + 0.5
    exp, state = member0(make_config(activation={"name": "gelu"}, model={"depth": 3, "width": 12},
                                     init={"name": "he", "sigma_b2": 0.2}), x)
    m = measured(exp, state, x)
    z = exp.model.apply(state.params, state.model_state, x, capture=True)[1]["z"]  # [L, P, W]
    q, c = numpy_q_c(list(np.asarray(z)))
    np.testing.assert_allclose(m["q"], q, rtol=1e-5)
    np.testing.assert_allclose(m["c"], c, rtol=1e-5, atol=1e-6)
    assert m["q"].shape == m["c"].shape == (3,)
    # pairs beyond the first 2K examples do not count
    if p == 150:
        x2 = x.copy()
        x2[128:] = 0.0
        np.testing.assert_allclose(measured(exp, state, x2)["c"], m["c"], rtol=1e-6)


def test_cnn_q_c_match_numpy():
    x = np.random.default_rng(2).standard_normal((20, 6, 6, 2)).astype(np.float32)
    exp, state = member0(make_config(model={"name": "cnn", "depth": 2, "channels": 4},
                                     activation={"name": "tanh"}), x)
    m = measured(exp, state, x)
    zs = exp.model.apply(state.params, state.model_state, x, capture=True)[1]["z"]
    assert [z.shape for z in zs] == [(20, 6, 6, 4), (20, 3, 3, 4)]
    q, c = numpy_q_c([np.asarray(z) for z in zs])  # every position an example for q
    np.testing.assert_allclose(m["q"], q, rtol=1e-5)
    np.testing.assert_allclose(m["c"], c, rtol=1e-5, atol=1e-6)


def test_only_the_selected_families_are_computed():
    x = np.random.default_rng(3).standard_normal((8, 3)).astype(np.float32)
    exp, state = member0(make_config(), x)
    assert set(measured(exp, state, x, ("q",))) == {"q", "train/loss", "train/acc", "logits_rms"}
    assert "q" not in measured(exp, state, x, ("act_mean",))
    assert {"q", "c"} <= set(metrics.FAMILIES)
    assert make_config(train={"metrics": "all"}).train.metrics == metrics.FAMILIES
    assert make_config(train={"metrics": ["c", "q"]}).train.metrics == ("q", "c")
    one = metrics.signal_metrics(np.ones((2, 1, 4), np.float32))  # one example: no pair
    assert np.all(np.isnan(np.asarray(one["c"]))) and np.allclose(one["q"], 1.0)


def test_records_carry_flat_q_and_c(tmp_path):
    cfg = make_config(train={"steps": 2, "log_every": 1, "eval_every": 0,
                             "metrics": ["q", "c"]})
    train.run(cfg, tmp_path)
    r0 = next(r for r in read_records(tmp_path) if r["step"] == 0)
    assert {"q/0", "q/1", "c/0", "c/1"} <= set(r0) and "q/2" not in r0
    assert "act_mean/0" not in r0 and "grad_norm/0" not in r0
    assert r0["q/0"] > 0 and -1 <= r0["c/1"] <= 1


def pairs(p: int, d: int, c0: float, seed: int = 0) -> np.ndarray:
    """p inputs of dimension d with |x|^2 / d = 1, pairs (2i, 2i + 1) at cosine c0."""
    g = np.random.default_rng(seed).standard_normal((d, p))
    basis = np.linalg.qr(g)[0].T * np.sqrt(d)  # p orthogonal vectors, |x|^2 = d
    x = basis.copy()
    x[1::2] = c0 * basis[0::2] + np.sqrt(1 - c0**2) * basis[1::2]
    return x.astype(np.float32)


def test_wide_tanh_network_follows_the_mean_field_prediction():
    b2, depth = 0.05, 10
    x = pairs(128, 256, 0.6)
    q0 = float(np.mean(x.astype(np.float64) ** 2))  # the probe batch's own q0 and c0
    c0 = float(numpy_q_c([x])[1][0])
    exp, state = member0(make_config(activation={"name": "tanh"},
                                     model={"depth": depth, "width": 1024},
                                     init={"name": "critical", "sigma_b2": b2}), x)
    m = measured(exp, state, x)
    w2 = exp.model.module.sigma_w2
    pred = theory.predict_layers("tanh", w2, b2, q0, depth, c0=c0)
    np.testing.assert_allclose(m["q"], pred["q"], rtol=0.08)  # ~3 sd at the deepest layers
    np.testing.assert_allclose(m["c"], pred["c"], atol=0.04)
    # and the prediction is far from trivial: c rises towards 1 (critical, c* = 1)
    assert pred["c"][-1] - pred["c"][0] > 0.05
