"""Concatenated ReLU (crelu): a layer outputs h = [relu(z), relu(-z)], twice its width.

A crelu MLP on hand-drawn weights against a forward pass written here in numpy (float64),
in both layer layouts; its per-layer metrics from the engine's pure step functions (dead
units, activation statistics, the backward signal at the 2W doubled pre-activations, where
eps is added) against numpy and a float64 reference differentiated per example; parameter
counts under model.glu_width=match against a count by hand; the signal's second moment at
initialisation against the mean-field length map (relu's); a short training run; and the
one-line errors.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations, models, theory
from actlab.activations import ActivationError, entry
from actlab.engine import experiment, step
from actlab.models import ModelError
from actlab.runs import driver as train
from conftest import make_config, measured_step, read_records

BATCH, PROBE, W = 6, 8, 3


def relu_np(x):
    return np.maximum(x, 0.0)


def reference(p, x, eps=None, xp=np):
    """The crelu MLP written out: z = h W + b, zz = [z, -z] (+ e), h = relu(zz), 2W wide."""
    kernels = [p["in_kernel"]]
    biases = [p["in_bias"]]
    if "hidden_kernel" in p:  # scanned layout: a stack
        kernels += list(p["hidden_kernel"])
        biases += list(p["hidden_bias"])
    kernels += [p[f"hidden{l}_kernel"] for l in range(1, 8) if f"hidden{l}_kernel" in p]
    biases += [p[f"hidden{l}_bias"] for l in range(1, 8) if f"hidden{l}_bias" in p]
    h, zs, hs = x, [], []
    for l, (k, b) in enumerate(zip(kernels, biases, strict=True)):
        assert k.shape[0] == h.shape[-1] and h.shape[-1] == (x.shape[-1] if l == 0 else 2 * W)
        z = h @ k + b
        zz = xp.concatenate([z, -z], -1)
        if eps is not None:
            zz = zz + eps[l]
        h = xp.maximum(zz, 0.0)
        zs.append(zz)
        hs.append(h)
    return h @ p["out_kernel"] + p["out_bias"], zs, hs


def drawn(shapes, edit=None, lead=0):
    """Parameters drawn here (kernels N(0, 1/fan_in), biases small), as float32 numpy."""
    rng = np.random.default_rng(7)

    def value(path, s):
        shape = s.shape[lead:]
        if str(path[-1].key).endswith("kernel"):
            return rng.normal(size=shape) / np.sqrt(shape[-2])
        return 0.3 * rng.normal(size=shape)

    p = jax.tree_util.tree_map_with_path(lambda q, s: np.asarray(value(q, s), np.float32),
                                         shapes)
    if edit:
        edit(p)
    return p


def mlp(act="crelu", depth=2, width=W, num_classes=2, fan_in=2, **params):
    acts = act if isinstance(act, tuple) else (act,) * depth
    return models.build("mlp", specs=tuple(activations.spec(a) for a in acts),
                        num_classes=num_classes, input_shape=(fan_in,), depth=depth,
                        width=width, **params)


def count(model, fan_in=2) -> int:
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, fan_in)))[0]
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))


def test_registered_as_relu_with_the_doubled_flag():
    inf, relu = activations.info("crelu"), activations.info("relu")
    assert inf.doubled and not inf.gated and not relu.doubled
    for key in ("output_range", "deriv_range", "monotone", "smooth", "zero_centred", "can_die",
                "saturation", "params", "learnable"):
        assert getattr(inf, key) == getattr(relu, key), key
    assert inf.formula and "relu(-z)" in inf.description
    sp = activations.spec("crelu")
    assert sp.doubled and activations.recommended_init("crelu") == "he"
    x = jnp.linspace(-3.0, 3.0, 61)
    np.testing.assert_array_equal(np.asarray(sp(x)), relu_np(np.asarray(x)))  # elementwise
    with pytest.raises(ActivationError, match="gated or doubled"):
        entry(lambda z: z, "both", gated=True, doubled=True)
    # the mean-field maps are relu's: per output entry [relu(z), relu(-z)] has relu's moments
    assert theory.critical_sigma_w2("crelu", 0.0) == theory.critical_sigma_w2("relu", 0.0)
    assert theory.chi1("crelu", 1.7, 0.1) == theory.chi1("relu", 1.7, 0.1)


@pytest.mark.parametrize("scan", [False, True])
def test_mlp_forward_and_captures_match_numpy(scan):
    m = mlp(depth=3, num_classes=4, fan_in=5, glu_width="same", scan_layers=scan)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.asarray(x))[0]
    p = drawn(shapes)
    hidden = (p["hidden_kernel"].shape[1:] if scan else p["hidden1_kernel"].shape)
    assert hidden == (2 * W, W) and p["out_kernel"].shape == (2 * W, 4)
    eps = np.random.default_rng(1).normal(size=(3, 7, 2 * W)).astype(np.float32) * 0.1
    logits, aux, _ = m.apply(jax.tree.map(jnp.asarray, p), {}, jnp.asarray(x),
                             eps=jnp.asarray(eps), capture=True)
    p64 = jax.tree.map(lambda a: a.astype(np.float64), p)
    want, zs, hs = reference(p64, x.astype(np.float64), list(eps.astype(np.float64)))
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-6)
    assert aux["z"].shape == aux["h"].shape == aux["dphi"].shape == (3, 7, 2 * W)
    np.testing.assert_allclose(np.asarray(aux["z"]), np.stack(zs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(aux["h"]), np.stack(hs), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(aux["dphi"]), (np.asarray(aux["z"]) > 0) * 1.0)


def test_cnn_doubles_its_channels():
    m = models.build("cnn", specs=(activations.spec("crelu"),) * 2, num_classes=3,
                     input_shape=(8, 8, 1), depth=2, channels=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    p, st = m.init(jax.random.PRNGKey(1), x)
    assert p["layer1"]["kernel"].shape == (3, 3, 8, 4) and p["out"]["kernel"].shape == (8, 3)
    logits, aux, _ = m.apply(p, st, x, capture=True)
    assert logits.shape == (2, 3) and [a.shape[-1] for a in aux["z"]] == [8, 8]
    z0 = np.asarray(aux["z"][0])
    np.testing.assert_array_equal(z0[..., 4:], -z0[..., :4])


def engine_case():
    """Member 0 of a depth-2 crelu MLP on xor, on weights drawn here: layer 0's unit 0 has
    z >> 0 on every example (its relu(-z) half is dead), unit 1 z << 0 (its relu(z) half)."""
    cfg = make_config(activation={"name": "crelu"},
                      model={"name": "mlp", "depth": 2, "width": W, "glu_width": "same"},
                      dataset={"name": "xor"}, optimizer={"name": "sgd", "lr": 0.1},
                      train={"batch_size": BATCH, "probe_size": PROBE})
    exp = experiment.build(cfg)
    members = [{"seed": 0}]
    consts = exp.consts(members)
    shapes = jax.eval_shape(lambda: experiment.initial_state(exp, members))

    def edit(p):
        p["in_bias"][:2] = [50.0, -50.0]

    params = jax.tree.map(jnp.asarray, drawn(shapes.params, edit, lead=1))
    state = step.TrainState(params=params, opt_state=exp.tx.init(params), model_state={},
                            step=jnp.zeros((), jnp.int32), diverged_at=jnp.full((), -1, jnp.int32),
                            key=jax.random.PRNGKey(0),
                            consts={k: jnp.asarray(v[0]) for k, v in consts.items()})
    ds = exp.dataset
    x, y = jnp.asarray(ds.x_train[:BATCH]), jnp.asarray(ds.y_train[:BATCH])
    xp, yp = (jnp.asarray(ds.x_train[BATCH:BATCH + PROBE]),
              jnp.asarray(ds.y_train[BATCH:BATCH + PROBE]))

    return state, (x, y, xp, yp), measured_step(exp, state, (x, y), (xp, yp))


def ce(logits, y, xp=np):
    lse = xp.log(xp.sum(xp.exp(logits - logits.max(-1, keepdims=True)), -1)) + logits.max(-1)
    return lse - logits[xp.arange(len(y)), y]


def test_metrics_act_on_the_doubled_preactivations():
    state, (x, y, xp, yp), m = engine_case()
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params)
    logits, zs, hs = reference(p, np.asarray(xp, np.float64))
    for l in range(2):
        dphi = (zs[l] > 0) * 1.0  # relu' on the 2W doubled pre-activations
        dead = np.mean(np.all(dphi <= 1e-12, axis=0))
        assert float(m["dead_frac"][l]) == pytest.approx(dead)
        np.testing.assert_allclose(m["act_mean"][l], hs[l].mean(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(m["act_std"][l], hs[l].std(), rtol=1e-4, atol=1e-6)
        assert float(m["sat_frac"][l]) == 0.0  # relu has no saturating tail
    # layer 0: unit W + 0 (relu(-z) of z >> 0) and unit 1 (relu(z) of z << 0) are dead
    assert np.all(zs[0][:, 0] > 0) and np.all(zs[0][:, 1] < 0)
    assert float(m["dead_frac"][0]) >= 2 / (2 * W)
    np.testing.assert_allclose(m["train/loss"], ce(logits, np.asarray(yp)).mean(), rtol=1e-4)
    with jax.enable_x64(True):  # delta: d loss / d zz per example, eps on the 2W entries
        pj = jax.tree.map(jnp.asarray, p)

        def loss_b(e, xb, yb):
            out = reference(pj, xb[None], [ei[None] for ei in e], xp=jnp)[0]
            return ce(out, yb[None], xp=jnp)[0]

        zeros = [jnp.zeros((BATCH, 2 * W), jnp.float64)] * 2
        per_example = jax.vmap(jax.grad(loss_b), in_axes=([0, 0], 0, 0))(
            zeros, jnp.asarray(x, jnp.float64), jnp.asarray(y))
    for l in range(2):
        delta = np.sqrt(np.mean(np.sum(np.asarray(per_example[l]) ** 2, -1)))
        np.testing.assert_allclose(m["delta_norm"][l], delta, rtol=1e-4)
    assert float(m["delta_norm"][0]) > 0


def hand_count(units, depth, fan_in, classes, doubled, norm="none"):
    """Parameters of the MLP: each kernel producing z has `units` columns; those taking h
    have 2 * units rows when doubled; a layer norm has a scale and a bias per unit of z."""
    rows = 2 * units if doubled else units
    return (fan_in * units + units + (depth - 1) * (rows * units + units) + rows * classes
            + classes + (2 * depth * units if norm == "layer" else 0))


@pytest.mark.parametrize("depth,width,classes,norm", [(1, 64, 2, "none"), (4, 64, 10, "none"),
                                                      (3, 20, 3, "layer")])
def test_glu_width_match_gives_the_plain_relu_parameter_count(depth, width, classes, norm):
    shape = (depth, 2, classes, True, norm)
    plain = count(mlp("relu", depth, width, classes, norm=norm))
    assert plain == hand_count(width, depth, 2, classes, False, norm)
    m = mlp("crelu", depth, width, classes, norm=norm)
    u = m.module.width
    n = count(m)
    assert n == hand_count(u, *shape)
    one_unit = hand_count(u + 1, *shape) - n
    assert abs(n - plain) <= one_unit
    closest = min(range(1, width + 1), key=lambda v: abs(hand_count(v, *shape) - plain))
    assert u == closest
    if depth > 1:
        assert abs(u - width / math.sqrt(2)) < 0.15 * width
    same = mlp("crelu", depth, width, classes, norm=norm, glu_width="same")
    assert same.module.width == width
    assert count(same) == hand_count(width, *shape)


def test_he_init_reads_the_doubled_fan_in_and_the_length_map_holds():
    """Var w = sigma_w2 / fan_in with fan_in = 2W, so each layer of a wide crelu MLP at init
    follows the mean-field length map q_{l+1} = sigma_w2 E[relu(sqrt(q_l) z)^2] + sigma_b2
    (relu's; a fan-in of W would double q at every layer)."""
    sw, sb, width, depth = 1.5, 0.1, 512, 5
    m = mlp("crelu", depth, width, 2, fan_in=16, glu_width="same", scan_layers=True,
            init=("he", "normal", 1.0, sw, sb))
    x = jax.random.normal(jax.random.PRNGKey(0), (128, 16))
    p, st = m.init(jax.random.PRNGKey(1), x)
    k = np.asarray(p["hidden_kernel"])
    assert k.shape == (depth - 1, 2 * width, width)
    np.testing.assert_allclose(k.var(), sw / (2 * width), rtol=0.02)
    _, aux, _ = m.apply(p, st, x, capture=True)
    q = np.mean(np.asarray(aux["z"]) ** 2, axis=(1, 2))  # over examples and the 2W entries
    np.testing.assert_allclose(q[0], sw * float(np.mean(np.asarray(x) ** 2)) + sb, rtol=0.05)
    predicted = theory.length_map("crelu", sw, sb, q[:-1])
    np.testing.assert_allclose(predicted, theory.length_map("relu", sw, sb, q[:-1]))
    np.testing.assert_allclose(q[1:], predicted, rtol=0.12)


def test_short_training_run_is_finite(tmp_path):
    cfg = make_config(activation={"name": "crelu"}, model={"depth": 2, "width": 8},
                      dataset={"name": "spiral"},
                      train={"steps": 10, "log_every": 5, "eval_every": 10})
    s = train.run(cfg, tmp_path)
    assert s["status"] == "completed"
    last = read_records(tmp_path)[-1]
    assert math.isfinite(last["train/loss"])
    for l in range(2):
        for key in ("dead_frac", "delta_norm", "act_std"):
            assert math.isfinite(last[f"{key}/{l}"]), (key, l)


def test_residual_layers_add_the_doubled_outputs():
    # layers 1.. take 2W values and give 2W: h_l = [relu(z_l), relu(-z_l)] + h_{l-1}
    model = mlp(residual=True)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 2)), jnp.float32)
    params, state = model.init(jax.random.PRNGKey(0), x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    h = np.asarray(x, np.float64)
    for k, b in (("in_kernel", "in_bias"), ("hidden1_kernel", "hidden1_bias")):
        z = h @ p[k] + p[b]
        new = np.concatenate([np.maximum(z, 0), np.maximum(-z, 0)], -1)
        h = new + h if k != "in_kernel" else new
    logits, _, _ = model.apply(params, state, x)
    np.testing.assert_allclose(np.asarray(logits), h @ p["out_kernel"] + p["out_bias"],
                               rtol=1e-5, atol=1e-5)


def test_one_line_errors():
    sp = activations.spec("crelu")
    for name, shape in (("transformer", (40, 1)), ("resnet", (8, 8, 1))):
        with pytest.raises(ModelError, match="needs model=mlp or model=cnn") as e:
            models.build(name, specs=(sp,) * models.check(name, {}), num_classes=3,
                         input_shape=shape)
        assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="mixes doubled units") as e:
        mlp(("relu", "crelu"))
    assert "\n" not in str(e.value)
