"""Every per-layer metric of one instrumented step against a numpy re-implementation.

A 2-hidden-layer network with hand-chosen weights (one unit of layer 0 dead for
relu, one strongly saturated for sigmoid/tanh) is trained for one full-batch SGD
step; the engine's record must equal the numbers computed by hand-written
numpy backpropagation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import data
from actlab.engine import experiment, step
from actlab.runs import records as summary
from conftest import make_config

X = np.array([[0.5, 1.0], [1.5, 0.5], [2.0, 2.0], [1.0, 1.5]], np.float32)
Y = np.array([0, 1, 1, 0], np.int32)
XT = np.array([[0.7, 0.2], [1.1, 1.9], [1.8, 0.4]], np.float32)
YT = np.array([1, 0, 1], np.int32)
LR = 0.1

PARAMS = {
    # unit 2 of layer 0: z = -x1 - x2 - 0.5 < 0 for every input (dead for relu);
    # unit 1: z = 5 x1 + 5 x2 in [7.5, 20] (saturated for sigmoid and tanh)
    "in_kernel": np.array([[0.8, 5.0, -1.0], [-0.6, 5.0, -1.0]], np.float32),
    "in_bias": np.array([0.1, 0.0, -0.5], np.float32),
    "hidden1_kernel": np.array([[0.5, -0.3, 0.2], [0.1, 0.2, -0.4], [0.7, 0.3, 0.9]],
                               np.float32),
    "hidden1_bias": np.array([0.05, -0.1, 0.2], np.float32),
    "out_kernel": np.array([[0.3, -0.2], [-0.5, 0.4], [0.6, 0.1]], np.float32),
    "out_bias": np.array([0.0, 0.1], np.float32),
}


def _sig(z):
    return 1 / (1 + np.exp(-z))


NUMPY_ACTS = {  # phi, phi', max|phi'|, saturation (lo, hi) or None
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0) * 1.0, 1.0, None),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2, 1.0, (0.0, 0.0)),
    "sigmoid": (_sig, lambda z: _sig(z) * (1 - _sig(z)), 0.25, (0.0, 0.0)),
    "prelu": (lambda z: np.where(z > 0, z, 0.25 * z), lambda z: np.where(z > 0, 1.0, 0.25),
              1.0, None),
}


def numpy_step(name):
    """Forward, backward and metrics in float64 numpy for PARAMS on (X, Y)."""
    phi, dphi, dmax, sat = NUMPY_ACTS[name]
    p = {k: v.astype(np.float64) for k, v in PARAMS.items()}
    x, n = X.astype(np.float64), len(X)
    Ws = [p["in_kernel"], p["hidden1_kernel"]]
    bs = [p["in_bias"], p["hidden1_bias"]]
    zs, hs, h = [], [], x
    for W, b in zip(Ws, bs, strict=True):
        z = h @ W + b
        h = phi(z)
        zs.append(z)
        hs.append(h)
    logits = h @ p["out_kernel"] + p["out_bias"]
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    loss = -np.mean(np.log(prob[np.arange(n), Y]))
    dlog = (prob - np.eye(2)[Y]) / n
    g_out = (hs[1].T @ dlog, dlog.sum(0))
    dz1 = (dlog @ p["out_kernel"].T) * dphi(zs[1])
    dz0 = (dz1 @ Ws[1].T) * dphi(zs[0])
    grads = [(x.T @ dz0, dz0.sum(0)), (hs[0].T @ dz1, dz1.sum(0))]
    dzs = [dz0, dz1]
    ref = {"train/loss": loss, "train/acc": np.mean(prob.argmax(1) == Y),
           "logits_rms": np.sqrt(np.mean(logits ** 2))}
    for l in range(2):
        gn = np.sqrt(np.sum(grads[l][0] ** 2) + np.sum(grads[l][1] ** 2))
        wn = np.sqrt(np.sum(Ws[l] ** 2) + np.sum(bs[l] ** 2))
        d = np.abs(dphi(zs[l]))
        ref[f"grad_norm/{l}"] = gn
        ref[f"weight_norm/{l}"] = wn
        ref[f"update_ratio/{l}"] = LR * gn / wn
        ref[f"delta_norm/{l}"] = np.sqrt(np.mean(np.sum((n * dzs[l]) ** 2, 1)))
        ref[f"act_mean/{l}"] = hs[l].mean()
        ref[f"act_std/{l}"] = hs[l].std()
        ref[f"dead_frac/{l}"] = np.mean(np.all(d <= 1e-12, axis=0))
        tail = (np.zeros_like(d, bool) if sat is None
                else (zs[l] < sat[0]) | (zs[l] > sat[1]))
        ref[f"sat_frac/{l}"] = np.mean((d < 0.01 * dmax) & tail)
        a = np.abs(hs[l]).mean(0)  # each unit's mean |h| (Sokar et al.'s score, unnormalised)
        ref[f"dormant_frac/{l}"] = np.mean(a <= 0.025 * a.mean())
        sv = np.linalg.svd(hs[l], compute_uv=False)
        pk = sv[sv > 0] / sv.sum()
        ref[f"erank/{l}"] = np.exp(-np.sum(pk * np.log(pk))) if sv.sum() > 0 else 0.0
        ref[f"srank/{l}"] = (int(np.searchsorted(np.cumsum(sv), 0.99 * sv.sum()) + 1)
                             if sv.sum() > 0 else 0)
        ref[f"weight_mag/{l}"] = np.abs(Ws[l]).mean()
        ref[f"preact_mean/{l}"] = zs[l].mean()
        ref[f"preact_std/{l}"] = zs[l].std()
    gn_out = np.sqrt(np.sum(g_out[0] ** 2) + np.sum(g_out[1] ** 2))
    ref["grad_norm/out"] = gn_out
    ref["weight_norm/out"] = np.sqrt(np.sum(p["out_kernel"] ** 2) + np.sum(p["out_bias"] ** 2))
    # eval on the test split
    h = XT.astype(np.float64)
    for W, b in zip(Ws, bs, strict=True):
        h = phi(h @ W + b)
    lt = h @ p["out_kernel"] + p["out_bias"]
    et = np.exp(lt - lt.max(1, keepdims=True))
    pt = et / et.sum(1, keepdims=True)
    ref["eval/loss"] = -np.mean(np.log(pt[np.arange(len(XT)), YT]))
    ref["eval/acc"] = np.mean(pt.argmax(1) == YT)
    return ref


def hand_dataset():
    return data.Dataset(name="hand", x_train=X, y_train=Y, x_test=XT, y_test=YT, num_classes=2,
                        mean=np.zeros(2, np.float32), std=np.ones(2, np.float32))


def engine_record(name, jit=True):
    """One measured step through the engine's pure step functions, flattened to a record."""
    cfg = make_config(activation={"name": name}, model={"depth": 2, "width": 3},
                      optimizer={"name": "sgd", "lr": LR},
                      train={"batch_size": 4, "probe_size": 4, "steps": 1, "log_every": 1,
                             "eval_every": 1})
    exp = experiment.build(cfg, dataset=hand_dataset())
    state = jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 0}]))
    assert set(PARAMS) <= set(state.params)  # every weight is replaced (prelu keeps its alpha)
    state = state.replace(params={**state.params,
                                  **{k: jnp.asarray(v) for k, v in PARAMS.items()}})
    model, head = exp.model, exp.head

    def measured(state, x, y, xt, yt):
        eps = step.zero_perturbation(model, state.params, state.model_state, x)
        _, out = step.train_step(state, (x, y), None, model=model, tx=exp.tx,
                                 loss_fn=step.loss_fn(model, head), eps=eps)
        m = step.measure(state, out, x, y, model=model, head=head)
        m.update(step.evaluate(state.params, state.model_state, xt, yt, model=model, head=head))
        return m

    fn = jax.jit(measured) if jit else measured
    m = fn(state, *(jnp.asarray(a) for a in (X, Y, XT, YT)))
    m = jax.tree.map(lambda a: np.asarray(a)[None], {**m, "diverged_at": -1})
    return summary.to_records(m, 0, 0.0, [{"seed": 0}], {"eval": True})[0]


@pytest.mark.parametrize("name", sorted(NUMPY_ACTS))
@pytest.mark.parametrize("jit", [True, False])
def test_every_metric_matches_numpy(name, jit):
    rec, ref = engine_record(name, jit), numpy_step(name)
    for k, v in ref.items():
        assert rec[k] == pytest.approx(v, rel=2e-5, abs=1e-6), k
    expected_keys = {f"{m}/{l}" for m in ("grad_norm", "weight_norm", "update_ratio",
                                          "delta_norm", "act_mean", "act_std", "dead_frac",
                                          "sat_frac") for l in (0, 1)}
    assert expected_keys <= set(rec)


def test_hand_case_exercises_dead_and_saturated_units():
    # Guard the fixture itself: the chosen weights really produce the phenomena.
    relu, sig, tanh = numpy_step("relu"), numpy_step("sigmoid"), numpy_step("tanh")
    assert relu["dead_frac/0"] == pytest.approx(1 / 3)
    assert relu["sat_frac/0"] == 0.0
    assert sig["sat_frac/0"] > 0 and tanh["sat_frac/0"] > 0
    assert sig["dead_frac/0"] == 0.0


def test_learnable_activation_parameters_are_reported():
    rec = engine_record("prelu")
    assert rec["prelu_alpha/0"] == pytest.approx(0.25)
    assert rec["prelu_alpha/1"] == pytest.approx(0.25)
