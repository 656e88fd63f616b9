"""Mixed precision (train.dtype): low-precision compute, float32 parameters and metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from actlab import activations, data
from actlab.engine import experiment, step
from actlab.runs import driver as train
from conftest import make_config, read_records

STEPS, WIDTH = 200, 16


def _train_every_activation(dtype) -> tuple[np.ndarray, list[str]]:
    """Train a 2-hidden-layer MLP on digits STEPS Adam steps for every elementwise activation
    at once: K independent networks side by side in one program (parameters stacked on a
    leading axis; network k applies activation k; the sum of their losses gives each its own
    gradients, and Adam is elementwise). Matmuls and activations in `dtype`, parameters and
    optimizer state float32. Returns whether each network's losses and gradients stayed
    finite, and the names."""
    names = [n for n in activations.names(include_output=False) if not activations.info(n).gated]
    specs = [activations.spec(n) for n in names]
    ds = data.load("digits")
    x = jnp.asarray(ds.x_train[:256], jnp.float32).reshape(256, -1)
    y = jnp.asarray(ds.y_train[:256])
    tx = optax.adam(1e-2)
    K = len(names)

    def forward(p):
        h = jnp.broadcast_to(x.astype(dtype), (K, *x.shape))
        for l in range(2):
            z = jnp.einsum("kbi,kio->kbo", h, p[f"w{l}"].astype(dtype)) + p[f"b{l}"].astype(
                dtype)[:, None]
            h = jnp.stack([sp(z[k]) for k, sp in enumerate(specs)])
        return jnp.einsum("kbi,kio->kbo", h, p["w2"].astype(dtype)).astype(jnp.float32)

    def losses(p):
        labels = jnp.broadcast_to(y, (K, *y.shape))
        return optax.softmax_cross_entropy_with_integer_labels(forward(p), labels).mean(-1)

    k = jax.random.split(jax.random.PRNGKey(0), 3)
    p = {"w0": jax.random.normal(k[0], (K, 64, WIDTH)) / 8.0, "b0": jnp.zeros((K, WIDTH)),
         "w1": jax.random.normal(k[1], (K, WIDTH, WIDTH)) / 4.0, "b1": jnp.zeros((K, WIDTH)),
         "w2": jax.random.normal(k[2], (K, WIDTH, 10)) / 4.0}

    @jax.jit
    def run(p):
        def body(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(lambda p: losses(p).sum())(p)
            per = losses(p)
            u, s = tx.update(g, s, p)
            finite = jnp.isfinite(per)
            for a in jax.tree.leaves(g):
                finite &= jnp.all(jnp.isfinite(a.reshape(K, -1)), -1)
            return (optax.apply_updates(p, u), s), finite

        _, finite = jax.lax.scan(body, (p, tx.init(p)), None, length=STEPS)
        return jnp.all(finite, 0)

    return np.asarray(run(p)), names


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_every_activation_trains_in_bfloat16_where_float32_does():
    ok32, names = _train_every_activation(jnp.float32)
    ok16, _ = _train_every_activation(jnp.bfloat16)
    assert ok32.all(), [n for n, o in zip(names, ok32, strict=True) if not o]
    assert ok16.all(), [n for n, o in zip(names, ok16, strict=True) if not o]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for dt in ("float32", "bfloat16"):
        d = tmp_path_factory.mktemp(dt)
        cfg = make_config(dataset={"name": "digits"}, optimizer={"name": "adam", "lr": 3e-3},
                          train={"steps": 200, "log_every": 50, "eval_every": 100, "dtype": dt})
        out[dt] = (cfg, train.run(cfg, d), read_records(d))
    return out


def test_bfloat16_run_trains_like_float32_with_float32_state(runs):
    (_, s32, r32), (cfg, s16, r16) = runs["float32"], runs["bfloat16"]
    assert s16["status"] == "completed"
    acc32, acc16 = s32["seeds"][0]["final_eval_acc"], s16["seeds"][0]["final_eval_acc"]
    assert acc16 > 0.8 and abs(acc16 - acc32) < 0.05
    # the same initialisation: step-0 metrics agree to bfloat16's precision, not exactly
    g32, g16 = np.asarray(r32[0]["grad_norm/0"]), np.asarray(r16[0]["grad_norm/0"])
    assert g16 != g32 and abs(g16 - g32) / g32 < 0.03
    exp = experiment.build(cfg)
    state = experiment.initial_state(exp)
    assert {a.dtype for a in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert {a.dtype for a in jax.tree.leaves(state.opt_state)
            if jnp.issubdtype(a.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}


def test_bfloat16_forward_runs_in_bfloat16(runs):
    """The forward pass's pre-activations are bfloat16 numbers (7 mantissa bits), the
    captures handed to the metrics float32."""
    cfg = runs["bfloat16"][0]
    exp = experiment.build(cfg)
    state = experiment.initial_state(exp)
    params = jax.tree.map(lambda a: a[0], state.params)
    x = jnp.asarray(exp.dataset.x_train[:8])
    _, aux, _ = exp.model.apply(params, {}, x, capture=True)
    z = aux["z"][0] if isinstance(aux["z"], list) else aux["z"]
    assert z.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(z), np.asarray(z.astype(jnp.bfloat16), np.float32))
    loss = step.loss_fn(exp.model, exp.head)(params, None, {}, x, jnp.asarray(
        exp.dataset.y_train[:8]), None)[0]
    assert loss.dtype == jnp.float32


@pytest.mark.parametrize("model", [{"name": "mlp", "depth": 2, "width": 8},
                                   {"name": "cnn", "depth": 1, "channels": 4}])
def test_matmul_precision_reaches_every_product_of_the_program(model):
    """train.matmul_precision sets the precision of every float32 dot and convolution the
    compiled program holds (forward, backward, metrics, evaluation): highest by default,
    so GPUs compute true float32 rather than TF32 unless asked to."""
    from actlab.engine import cadence as schedule
    from actlab.engine import loop as program

    def products(precision):
        cfg = make_config(model=model, dataset={"name": "digits"},
                          train={"matmul_precision": precision})
        exp = experiment.build(cfg)
        names = program.measurement_names(exp)
        plan = program.plan_arrays(schedule.Call((schedule.Slot(
            0, 2, True, dict.fromkeys(names, True)),)), 1, names)
        text = program.make_program(exp, 1).lower(
            experiment.initial_state(exp), experiment.device_data(exp), plan).as_text()
        return [line for line in text.splitlines()
                if "stablehlo.dot_general" in line or "stablehlo.convolution" in line]

    with jax.default_matmul_precision("default"):  # not the conftest's global setting
        for precision, marker, other in (("highest", "HIGHEST", "DEFAULT"),
                                         ("default", "DEFAULT", "HIGHEST")):
            ops = products(precision)
            assert len(ops) > 10
            wrong = [op for op in ops if marker not in op or other in op]
            assert not wrong, (precision, wrong[:2])
    assert make_config().train.matmul_precision == "highest"
