"""Gated units (GLU family) and DyT in the models, against float64 references written here.

A gated MLP on known weights: its logits, gradients, per-example backward signal at the
gate's pre-activation and every per-layer metric (including gate_mean and the gated
definition of a dead unit) from the engine's pure step functions, against a forward pass
written here in float64 from the parameter arrays (differentiated with jax.grad, per
example with jax.vmap) and metrics computed in numpy from their definitions. Parameter
counts under model.glu_width=match are counted from the built models' arrays.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from actlab.engine import experiment, step
from actlab.models import ModelError
from actlab.runs import driver as train
from conftest import make_config, read_records

BATCH, PROBE, LR = 6, 8, 0.1
GATES = {  # the gate of each gated name, written out
    "reglu": lambda z: jnp.maximum(z, 0.0),
    "swiglu": lambda z: z / (1.0 + jnp.exp(-z)),
    "geglu": lambda z: 0.5 * z * (1.0 + erf(z / math.sqrt(2.0))),
    "glu": lambda z: 1.0 / (1.0 + jnp.exp(-z)),
    "bilinear": lambda z: z,
}


def build(act: str, depth: int = 2, width: int = 3, **model):
    cfg = make_config(activation={"name": act},
                      model={"name": "mlp", "depth": depth, "width": width, **model},
                      dataset={"name": "xor"}, optimizer={"name": "sgd", "lr": LR},
                      train={"batch_size": BATCH, "probe_size": PROBE})
    return experiment.build(cfg)


def member_state(exp, edit=None):
    """Member 0's state with parameters drawn here (kernels N(0, 1/fan_in), biases small)."""
    members = [{"seed": 0}]
    consts = exp.consts(members)
    shapes = jax.eval_shape(lambda: experiment.initial_state(exp, members))
    rng = np.random.default_rng(7)

    def value(path, s):
        shape, name = s.shape[1:], str(path[-1].key)
        if name.endswith("kernel"):
            return rng.normal(size=shape) / np.sqrt(shape[-2])
        if name == "dyt_alpha":
            return np.full(shape, 0.7)
        if name == "norm_scale":
            return 1.0 + 0.2 * rng.normal(size=shape)
        return 0.3 * rng.normal(size=shape)

    params = jax.tree_util.tree_map_with_path(
        lambda p, s: np.asarray(value(p, s), np.float32), shapes.params)
    if edit:
        edit(params)
    params = jax.tree.map(jnp.asarray, params)
    return step.TrainState(params=params, opt_state=exp.tx.init(params), model_state={},
                           step=jnp.zeros((), jnp.int32), diverged_at=jnp.full((), -1, jnp.int32),
                           key=jax.random.PRNGKey(0),
                           consts={k: jnp.asarray(v[0]) for k, v in consts.items()})


def engine(exp, state):
    ds = exp.dataset
    x, y = jnp.asarray(ds.x_train[:BATCH]), jnp.asarray(ds.y_train[:BATCH])
    xp, yp = jnp.asarray(ds.x_train[BATCH:BATCH + PROBE]), jnp.asarray(
        ds.y_train[BATCH:BATCH + PROBE])

    @jax.jit
    def run(state):
        eps = step.zero_perturbation(exp.model, state.params, state.model_state, x)
        _, out = step.train_step(state, (x, y), None, model=exp.model, tx=exp.tx,
                                 loss_fn=step.loss_fn(exp.model, exp.head), eps=eps)
        return out, step.measure(state, out, xp, yp, model=exp.model, head=exp.head)

    return (x, y, xp, yp), *run(state)


def reference_forward(p, x, gate, eps=None, norm="none"):
    """The gated MLP in float64: z = norm(h W + b) = [z_g, z_v], h = gate(z_g + e) * z_v."""
    kernels = [p["in_kernel"]] + [p[f"hidden{l}_kernel"] for l in range(1, 8)
                                  if f"hidden{l}_kernel" in p]
    biases = [p["in_bias"]] + [p[f"hidden{l}_bias"] for l in range(1, 8) if f"hidden{l}_bias" in p]
    h, zgs, hs, vs = x, [], [], []
    for l, (k, b) in enumerate(zip(kernels, biases, strict=True)):
        z = h @ k + b
        if norm == "dyt":
            z = p["norm_scale"][l] * jnp.tanh(p["dyt_alpha"][l] * z) + p["norm_bias"][l]
        u = z.shape[-1] // 2
        zg, zv = z[..., :u], z[..., u:]
        if eps is not None:
            zg = zg + eps[l]
        h = gate(zg) * zv
        zgs.append(zg), hs.append(h), vs.append(zv)
    return h @ p["out_kernel"] + p["out_bias"], zgs, hs, vs


def ce(logits, y):
    return -jax.nn.log_softmax(logits)[jnp.arange(len(y)), y]


@functools.cache
def case(act: str, edit_name: str | None = None, norm: str = "none"):
    edits = {"gate_off": lambda p: p["in_bias"].__setitem__(slice(0, 3), -50.0)}
    exp = build(act, norm=norm, glu_width="same")
    state = member_state(exp, edits.get(edit_name))
    data, out, m = engine(exp, state)
    return exp, state, data, out, m


@pytest.mark.parametrize("act", ["reglu", "geglu"])
def test_gated_mlp_matches_float64_reference(act):
    exp, state, (x, y, xp, yp), out, m = case(act)
    gate = GATES[act]
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state.params)
        x64, xp64 = jnp.asarray(x, jnp.float64), jnp.asarray(xp, jnp.float64)
        zeros = [jnp.zeros((BATCH, 3))] * 2
        grads = jax.grad(lambda p: ce(reference_forward(p, x64, gate)[0], y).mean())(p)

        def loss_b(e, xb, yb):
            return ce(reference_forward(p, xb[None], gate, [ei[None] for ei in e])[0],
                      yb[None])[0]

        per_example = jax.vmap(jax.grad(loss_b), in_axes=([0, 0], 0, 0))(zeros, x64, y)
        logits, zgs, hs, vs = reference_forward(p, xp64, gate)
        # the gate's own derivative and the unit's two input gradients, per example and unit
        dgate = [jax.vmap(jax.vmap(jax.grad(gate)))(z) for z in zgs]
        gates = [gate(z) for z in zgs]
        flow = [np.maximum(np.abs(d * v), np.abs(g)) for d, v, g in zip(dgate, vs, gates,
                                                                       strict=True)]
    for l in range(2):
        g = [grads["in_kernel" if l == 0 else "hidden1_kernel"],
             grads["in_bias" if l == 0 else "hidden1_bias"]]
        want = math.sqrt(sum(float(np.sum(np.asarray(a) ** 2)) for a in g))
        np.testing.assert_allclose(m["grad_norm"][l], want, rtol=1e-4)
        delta = np.sqrt(np.mean(np.sum(np.asarray(per_example[l]) ** 2, -1)))
        np.testing.assert_allclose(m["delta_norm"][l], delta, rtol=1e-4)
        h = np.asarray(hs[l])
        np.testing.assert_allclose(m["act_mean"][l], h.mean(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(m["act_std"][l], h.std(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(m["gate_mean"][l], np.asarray(gates[l]).mean(), rtol=1e-4,
                                   atol=1e-6)
        dead = np.mean(np.all(np.asarray(flow[l]) <= 1e-12, axis=0))
        assert float(m["dead_frac"][l]) == pytest.approx(dead)
    np.testing.assert_allclose(m["train/loss"], float(ce(logits, yp).mean()), rtol=1e-4)


def test_reglu_gate_off_everywhere_reads_dead_and_swiglu_never_does():
    """Layer 0's gate bias at -50: every ReGLU unit there has gate 0 and gate' 0 on every
    example (dead: output and both input gradients vanish); SwiGLU's gate silu(-50) is tiny
    but its gradient is not exactly 0, and silu cannot die."""
    *_, m = case("reglu", "gate_off")
    assert float(m["dead_frac"][0]) == 1.0
    assert float(m["gate_mean"][0]) == 0.0
    assert float(m["delta_norm"][0]) == 0.0
    *_, m = case("swiglu", "gate_off")
    assert float(m["dead_frac"][0]) == 0.0 and float(m["dead_frac"][1]) == 0.0
    assert float(m["gate_mean"][0]) < 0


def test_dyt_mlp_matches_its_formula_and_logs_alpha():
    exp, state, (x, y, xp, yp), out, m = case("bilinear", None, "dyt")
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state.params)
        logits = reference_forward(p, jnp.asarray(xp, jnp.float64), GATES["bilinear"],
                                   norm="dyt")[0]
        grads = jax.grad(lambda p: ce(reference_forward(
            p, jnp.asarray(x, jnp.float64), GATES["bilinear"], norm="dyt")[0], y).mean())(p)
    np.testing.assert_allclose(m["train/loss"], float(ce(logits, yp).mean()), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(out["grads"]["dyt_alpha"]),
                               np.asarray(grads["dyt_alpha"]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(m["dyt_alpha"], [0.7, 0.7])


def count(exp) -> int:
    """Trained parameters of the built model, counted from its arrays' shapes."""
    x0 = jnp.asarray(exp.dataset.x_train[:1])
    params, _ = jax.eval_shape(exp.model.init, jax.random.PRNGKey(0), x0)
    return sum(math.prod(s.shape) for s in jax.tree.leaves(params))


@pytest.mark.parametrize("depth,width,norm", [(1, 64, "none"), (4, 64, "none"), (6, 48, "dyt")])
def test_glu_width_match_keeps_the_mlp_parameter_count(depth, width, norm):
    plain = count(build("gelu", depth, width, norm=norm))
    gated = build("swiglu", depth, width, norm=norm)
    n = count(gated)
    u = gated.model.module.width
    # the closest count any unit number gives: one unit fewer or more is no closer
    step_cost = count(build("swiglu", depth, u + 1, norm=norm, glu_width="same")) - n
    assert abs(n - plain) <= step_cost / 2 + 1
    assert abs(n - plain) / plain < 0.05
    assert count(build("swiglu", depth, width, norm=norm, glu_width="same")) > 1.4 * plain


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_glu_width_match_in_the_transformer_is_shazeers_two_thirds():
    def tf(act, **kw):
        cfg = make_config(activation={"name": act},
                          model={"name": "transformer", "depth": 1, "dim": 24, "heads": 2,
                                 "mlp_ratio": 4, **kw}, dataset={"name": "mnist1d"})
        return experiment.build(cfg)

    plain, gated = tf("gelu"), tf("swiglu")
    assert gated.model.module.hidden == round(2 / 3 * 96)
    # MLP kernels: 2 * 24 * 96 ungated, 3 * 24 * 64 gated: equal; biases differ by 32
    assert count(gated) - count(plain) == 2 * 64 - 96
    assert count(tf("swiglu", glu_width="same")) - count(plain) == 24 * 96 + 96


def test_gated_units_need_an_mlp_or_transformer():
    with pytest.raises(ModelError, match="model=mlp or model=transformer"):
        experiment.build(make_config(activation={"name": "swiglu"}, model={"name": "cnn"},
                                     dataset={"name": "mnist1d"}))


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_swiglu_transformer_with_dyt_trains_and_logs(tmp_path):
    cfg = make_config(activation={"name": "swiglu"},
                      model={"name": "transformer", "depth": 2, "dim": 8, "heads": 2,
                             "norm": "dyt"},
                      dataset={"name": "mnist1d"}, train={"steps": 20, "log_every": 10})
    summary = train.run(cfg, tmp_path)
    assert summary["status"] == "completed"
    recs = read_records(tmp_path)
    for key in ("gate_mean/0", "gate_mean/1", "dyt_alpha/0", "dyt_alpha_attn/1",
                "dyt_alpha/final", "dead_frac/1", "delta_norm/0"):
        assert np.isfinite(recs[-1][key]), key
    assert recs[0]["dyt_alpha/0"] == 0.5
    assert recs[-1]["dyt_alpha/0"] != 0.5  # learned
