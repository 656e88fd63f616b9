"""Every per-layer metric of the conv, residual, attention and recommender models against an
independent float64 re-implementation.

Each model is built through the engine with tiny widths; its state has the layout of
experiment.initial_state, with parameters set here so that a relu channel is dead (a very
negative bias), a tanh or sigmoid layer is partly saturated, prelu's alpha is away from its
initial value and batch-norm running statistics are away from (0, 1). One instrumented SGD
step and the measurement come from the engine's pure step functions; the reference is a
forward pass written here from the parameter arrays (jax.numpy in float64: conv, pooling,
batch and layer norm, attention), differentiated with jax.grad (per example with jax.vmap
where examples are independent), with the metrics computed in numpy from the definitions
in DESIGN.md ("Metric definitions").
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations, data
from actlab.engine import experiment, step
from conftest import make_config

LR = 0.05
BATCH, PROBE = 5, 4
REL, ABS = 1e-4, 1e-6
BN_EPS, LN_EPS = 1e-5, 1e-6  # flax defaults
DEAD_BIAS = -50.0
PER_LAYER = ("grad_norm", "weight_norm", "update_ratio", "delta_norm", "act_mean", "act_std",
             "dead_frac", "sat_frac")
PREACT = ("preact_mean", "preact_std")  # family preact_drift (its drift is 0 at step 0)
OUT_METRICS = ("grad_norm", "weight_norm", "update_ratio")


# --------------------------------------------------------------------------- #
# Activations, written out (jnp for the differentiated forward, numpy for the metrics)

def phi(name, z, alpha=None):
    if name == "relu":
        return jnp.maximum(z, 0.0)
    if name == "tanh":
        return jnp.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + jnp.exp(-z))
    if name == "prelu":
        return jnp.where(z > 0, z, alpha * z)
    raise ValueError(name)


def phi_np(name, z, alpha=None):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "prelu":
        return np.where(z > 0, z, alpha * z)
    raise ValueError(name)


def dphi_np(name, z, alpha=None):
    if name == "relu":
        return (z > 0) * 1.0
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    if name == "prelu":
        return np.where(z > 0, 1.0, alpha)
    raise ValueError(name)


def dphi_max(name, alpha=None):
    return {"relu": 1.0, "tanh": 1.0, "sigmoid": 0.25}.get(name) or max(1.0, abs(alpha))


# --------------------------------------------------------------------------- #
# Building blocks of the reference forward passes ([B, T, C] sequences)

def conv1d(h, kernel, stride=1, bias=None):
    """'SAME' cross-correlation of [B, T, Cin] with a [K, Cin, Cout] kernel."""
    k, t = kernel.shape[0], h.shape[1]
    n_out = -(-t // stride)
    total = max((n_out - 1) * stride + k - t, 0)
    hp = jnp.pad(h, ((0, 0), (total // 2, total - total // 2), (0, 0)))
    z = sum(hp[:, j: j + (n_out - 1) * stride + 1: stride] @ kernel[j] for j in range(k))
    return z if bias is None else z + bias


def max_pool2(h):
    b, t, c = h.shape
    return h[:, : t // 2 * 2].reshape(b, t // 2, 2, c).max(2)


def batch_norm(h, p, stats, train):
    if train:
        mu = h.mean((0, 1))
        var = ((h - mu) ** 2).mean((0, 1))
    else:
        mu, var = stats["mean"], stats["var"]
    return (h - mu) / jnp.sqrt(var + BN_EPS) * p["scale"] + p["bias"]


def layer_norm(h, p):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / jnp.sqrt(var + LN_EPS) * p["scale"] + p["bias"]


def attention(y, p):
    """Multi-head self-attention from query/key/value/out kernels [D, H, d] and [H, d, D]."""
    q, k, v = (jnp.einsum("btd,dhe->bthe", y, p[n]["kernel"]) + p[n]["bias"]
               for n in ("query", "key", "value"))
    q = q / np.sqrt(q.shape[-1])
    s = jnp.einsum("bqhe,bkhe->bhqk", q, k)
    w = jnp.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    o = jnp.einsum("bhqk,bkhe->bqhe", w, v)
    return jnp.einsum("bqhe,hed->bqd", o, p["out"]["kernel"]) + p["out"]["bias"]


class Sites:
    """Applies layer l's activation, adding the perturbation eps[l] and recording z_l."""

    def __init__(self, acts, params, eps):
        self.acts, self.params, self.eps, self.z = acts, params, eps, []

    def __call__(self, l, z):
        if self.eps is not None:
            z = z + self.eps[l]
        self.z.append(z)
        return phi(self.acts[l], z, self.params.get(f"act{l}_alpha"))


# --------------------------------------------------------------------------- #
# The four models, re-implemented: forward(p, stats, x, acts, eps, train) -> (logits, [z_l])

def cnn_forward(p, stats, x, acts, eps, train):
    site, h = Sites(acts, p, eps), x
    for l in range(len(acts)):
        h = site(l, conv1d(h, p[f"layer{l}"]["kernel"], bias=p[f"layer{l}"]["bias"]))
        if h.shape[1] >= 2:
            h = max_pool2(h)
    return h.mean(1) @ p["out"]["kernel"] + p["out"]["bias"], site.z


def resnet_forward(p, stats, x, acts, eps, train, preact):
    site = Sites(acts, p, eps)
    stats = stats.get("batch_stats", {})

    def bn(h, name):
        return batch_norm(h, p[name], stats.get(name), train)

    def conv(h, name, stride=1):
        return conv1d(h, p[name]["kernel"], stride)

    h = conv(x, "layer0")
    if not preact:
        h = site(0, bn(h, "layer0_bn"))
    blocks = (len(acts) - 1) // 6
    n = 0
    for stage in range(3):
        for b in range(blocks):
            stride = 2 if stage > 0 and b == 0 else 1
            l1, l2 = 2 * n + 1, 2 * n + 2
            if preact:
                y = site(2 * n, bn(h, f"layer{2 * n}_bnpre"))
                widen = stride != 1 or p[f"layer{l1}"]["kernel"].shape[-1] != h.shape[-1]
                shortcut = y if widen else h
                y = site(l1, bn(conv(y, f"layer{l1}", stride), f"layer{l1}_bn"))
                y = conv(y, f"layer{l2}")
            else:
                shortcut = h
                y = site(l1, bn(conv(h, f"layer{l1}", stride), f"layer{l1}_bn"))
                y = bn(conv(y, f"layer{l2}"), f"layer{l2}_bn")
            if shortcut.shape != y.shape:
                shortcut = conv(shortcut, f"proj{n}", stride)
            h = shortcut + y
            if not preact:
                h = site(l2, h)
            n += 1
    if preact:
        h = site(2 * n, bn(h, f"layer{2 * n}_bnpre"))
    return h.mean(1) @ p["out"]["kernel"] + p["out"]["bias"], site.z


def transformer_forward(p, stats, x, acts, eps, train):
    site = Sites(acts, p, eps)
    h = x @ p["embed"]["kernel"] + p["embed"]["bias"] + p["pos"]
    for l in range(len(acts)):
        h = h + attention(layer_norm(h, p[f"layer{l}_ln1"]), p[f"layer{l}_attn"])
        y = layer_norm(h, p[f"layer{l}_ln2"]) @ p[f"layer{l}"]["kernel"] + p[f"layer{l}"]["bias"]
        y = site(l, y)
        h = h + y @ p[f"layer{l}_fc2"]["kernel"] + p[f"layer{l}_fc2"]["bias"]
    h = layer_norm(h, p["final_ln"]).mean(1)
    return h @ p["out"]["kernel"] + p["out"]["bias"], site.z


def recommender_forward(p, stats, x, acts, eps, train):
    site = Sites(acts, p, eps)
    idx = x.astype(jnp.int32)
    h = jnp.concatenate([p["user_embedding"]["embedding"][idx[:, 0]],
                         p["item_embedding"]["embedding"][idx[:, 1]]], -1)
    for l in range(len(acts)):
        h = site(l, h @ p[f"layer{l}"]["kernel"] + p[f"layer{l}"]["bias"])
    return h @ p["out"]["kernel"] + p["out"]["bias"], site.z


def softmax_losses(logits, y):
    m = logits.max(-1, keepdims=True)
    lse = m[:, 0] + jnp.log(jnp.exp(logits - m).sum(-1))
    return lse - jnp.take_along_axis(logits, y[:, None], -1)[:, 0]


def rating_losses(logits, y):
    return (1.0 / (1.0 + jnp.exp(-logits[:, 0])) - y) ** 2


# --------------------------------------------------------------------------- #
# Cases

def seq_dataset(n=BATCH + PROBE, t=8, c=2, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, c)).astype(np.float32)
    y = rng.integers(0, classes, n).astype(np.int32)
    return data.Dataset(name="seq", x_train=x, y_train=y, x_test=x, y_test=y,
                        num_classes=classes, mean=np.zeros(c, np.float32),
                        std=np.ones(c, np.float32))


def ratings_dataset():
    return data.load("ratings", num_users=12, num_items=10, density=0.5, seed=1)


RESNET_ACTS = ("relu", "tanh", "sigmoid", "prelu", "relu", "tanh", "relu")


@dataclasses.dataclass(frozen=True)
class Case:
    model: dict
    acts: tuple[str, ...]
    dataset: Callable[[], data.Dataset]
    forward: Callable
    edits: dict  # (module, leaf) -> in-place edit of a numpy array: dead / saturated units
    alpha: dict  # layer -> prelu alpha
    dead: dict  # layer -> dead fraction the edits force (at least; relu dies alone too)
    saturated: tuple[int, ...]  # layers with some saturated (example, unit) pairs
    rating: bool = False


def _set(idx, v):
    def edit(a):
        a[idx] = v

    return edit


CASES = {
    "cnn": Case(
        model={"name": "cnn", "depth": 3, "channels": 3}, acts=("relu", "tanh", "prelu"),
        dataset=seq_dataset, forward=cnn_forward,
        edits={("layer0", "bias"): _set(1, DEAD_BIAS), ("layer1", "bias"): _set(0, 5.0)},
        alpha={2: 0.1}, dead={0: 1 / 3}, saturated=(1,)),
    "resnet": Case(
        model={"name": "resnet", "blocks": 1, "channels": 2}, acts=RESNET_ACTS,
        dataset=seq_dataset, forward=functools.partial(resnet_forward, preact=False),
        edits={("layer0_bn", "bias"): _set(1, DEAD_BIAS),
               ("layer6_bn", "bias"): _set(slice(0, 2), DEAD_BIAS),
               ("layer1_bn", "bias"): _set(0, 5.0),
               ("layer2_bn", "bias"): _set(1, 9.0),
               ("layer5_bn", "bias"): _set(slice(0, 2), [5.0, -5.0])},
        alpha={3: 0.4}, dead={0: 1 / 2, 6: 2 / 8}, saturated=(1, 2, 5)),
    "resnet_preact": Case(
        model={"name": "resnet", "blocks": 1, "channels": 2, "preact": True}, acts=RESNET_ACTS,
        dataset=seq_dataset, forward=functools.partial(resnet_forward, preact=True),
        edits={("layer0_bnpre", "bias"): _set(1, DEAD_BIAS),
               ("layer6_bnpre", "bias"): _set(slice(0, 2), DEAD_BIAS),
               ("layer1_bn", "bias"): _set(0, 5.0),
               ("layer2_bnpre", "bias"): _set(1, 9.0),
               ("layer5_bn", "bias"): _set(slice(0, 2), [5.0, -5.0])},
        alpha={3: 0.4}, dead={0: 1 / 2, 6: 2 / 8}, saturated=(1, 2, 5)),
    "transformer": Case(
        model={"name": "transformer", "depth": 3, "dim": 4, "heads": 2, "mlp_ratio": 2},
        acts=("relu", "tanh", "prelu"), dataset=functools.partial(seq_dataset, t=6, c=1),
        forward=transformer_forward,
        edits={("layer0", "bias"): _set(3, DEAD_BIAS),
               ("layer1", "bias"): _set(slice(0, 2), [5.0, -5.0])},
        alpha={2: 0.1}, dead={0: 1 / 8}, saturated=(1,)),
    "recommender": Case(
        model={"name": "recommender", "n_factors": 2, "hidden": [4, 3, 3], "dropout": 0.0},
        acts=("relu", "sigmoid", "prelu"), dataset=ratings_dataset,
        forward=recommender_forward,
        edits={("layer0", "bias"): _set(2, DEAD_BIAS), ("layer1", "bias"): _set(0, 9.0)},
        alpha={2: 0.1}, dead={0: 1 / 4}, saturated=(1,), rating=True),
}

# A tanh channel with 10 < z < 12 and a sigmoid unit with z near 20 at every probe example:
# phi' is tiny (1e-9 .. 1e-8) but far above the dead threshold 1e-12.
HARD_SATURATION = {
    "cnn_tanh": dataclasses.replace(CASES["cnn"], edits={
        **CASES["cnn"].edits, ("layer1", "bias"): _set(0, 11.0)}),
    "recommender_sigmoid": dataclasses.replace(CASES["recommender"], edits={
        **CASES["recommender"].edits, ("layer1", "bias"): _set(0, 20.0)}),
}
ALL_CASES = {**CASES, **HARD_SATURATION}


def _initial_value(path, shape, rng):
    """A parameter value by its name: kernels ~ N(0, 1/fan_in), scales near 1, biases near 0."""
    name = str(path[-1].key)
    if name == "kernel":
        return rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
    if name == "scale":
        return 1.0 + 0.1 * rng.normal(size=shape)
    if name == "embedding":
        return rng.normal(size=shape)
    if name.endswith("_alpha"):
        return np.full(shape, 0.25)
    return 0.1 * rng.normal(size=shape)  # biases, positional embedding


def member_state(case: Case, exp) -> step.TrainState:
    """One member's state, laid out as experiment.initial_state lays it out, with values set
    here (instead of compiling the initialisers, which costs seconds per model); then the
    case's edits."""
    members = [{"seed": 0}]
    consts = exp.consts(members)  # concrete (and cached) before tracing
    shapes = jax.eval_shape(lambda: experiment.initial_state(exp, members))
    rng = np.random.default_rng(3)
    params = jax.tree_util.tree_map_with_path(
        lambda path, s: _initial_value(path, s.shape[1:], rng).astype(np.float32),
        shapes.params)
    for (module, leaf), edit in case.edits.items():
        edit(params[module][leaf])
    for l, a in case.alpha.items():
        params[f"act{l}_alpha"] = np.float32(a)
    # running statistics away from (0, 1), so evaluation mode is distinguishable
    model_state = jax.tree_util.tree_map_with_path(
        lambda path, s: (rng.uniform(0.5, 2.0, s.shape[1:]) if path[-1].key == "var"
                         else 0.3 * rng.normal(size=s.shape[1:])).astype(np.float32),
        shapes.model_state)
    params = jax.tree.map(jnp.asarray, params)
    state = step.TrainState(
        params=params, opt_state=exp.tx.init(params),
        model_state=jax.tree.map(jnp.asarray, model_state), step=jnp.zeros((), jnp.int32),
        diverged_at=jnp.full((), -1, jnp.int32), key=jax.random.PRNGKey(0),
        consts={k: jnp.asarray(v[0]) for k, v in consts.items()},
        extra=jax.tree.map(lambda s: jnp.zeros(s.shape[1:], s.dtype), shapes.extra))
    assert jax.tree.structure(state) == jax.tree.structure(shapes)
    return state


@functools.cache
def engine(name: str):
    """(exp, state, (x, y, x_fixed, y_fixed), new_state, out, measurement, grad_norm only)."""
    case = ALL_CASES[name]
    cfg = make_config(model={**case.model, "activations": list(case.acts)},
                      optimizer={"name": "sgd", "lr": LR},
                      train={"batch_size": BATCH, "probe_size": PROBE})
    ds = case.dataset()
    exp = experiment.build(cfg, dataset=ds)
    state = member_state(case, exp)
    x, y = jnp.asarray(ds.x_train[:BATCH]), jnp.asarray(ds.y_train[:BATCH])
    xp = jnp.asarray(ds.x_train[BATCH:BATCH + PROBE])
    yp = jnp.asarray(ds.y_train[BATCH:BATCH + PROBE])
    model, head = exp.model, exp.head

    @jax.jit
    def run(state, x, y, xp, yp):
        eps = step.zero_perturbation(model, state.params, state.model_state, x)
        new_state, out = step.train_step(state, (x, y), None, model=model, tx=exp.tx,
                                         loss_fn=step.loss_fn(model, head), eps=eps)
        m = step.measure(state, out, xp, yp, model=model, head=head)
        only = step.measure(state, out, xp, yp, model=model, head=head,
                            selected=("grad_norm",))
        return new_state, out, m, only

    new_state, out, m, only = run(state, x, y, xp, yp)
    return exp, state, (x, y, xp, yp), new_state, out, m, only


# --------------------------------------------------------------------------- #
# The reference

LAYER_MODULE = re.compile(r"layer(\d+)(?:_.*)?")


def grouped_norms(tree, num_layers):
    """L2 norm per layer (modules 'layer<l>' and 'layer<l>_*') and of 'out', float64."""
    sq, out = np.zeros(num_layers), 0.0
    for module, sub in tree.items():
        s = sum(np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree.leaves(sub))
        if module == "out":
            out += s
        elif (match := LAYER_MODULE.fullmatch(module)):
            sq[int(match.group(1))] += s
    return np.sqrt(sq), np.sqrt(out)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def reference_core(forward_fn, acts, rating, coupled, p, ms, x, y, xp, yp):
    """Gradients, per-example d loss_b / d z_l, probe logits, losses and z (float64)."""
    losses = rating_losses if rating else softmax_losses

    def forward(p, x, eps, train):
        return forward_fn(p, ms, x, acts, eps, train)

    def batch_loss(p, eps):
        return losses(forward(p, x, eps, True)[0], y).mean()

    zeros = [jnp.zeros_like(z) for z in forward(p, x, None, True)[1]]
    grads, g_batch = jax.grad(batch_loss, argnums=(0, 1))(p, zeros)
    if coupled:
        # batch norm couples the examples: example b's signal is B * d(mean loss)/d z_l[b]
        g_eps = [x.shape[0] * g for g in g_batch]
    else:
        def one_loss(e, xb, yb):  # example b alone: its own forward pass and loss
            return losses(forward(p, xb[None], [a[None] for a in e], True)[0], yb[None])[0]

        g_eps = jax.vmap(jax.grad(one_loss))(zeros, x, y)
    logits_p, z_probe = forward(p, xp, None, False)
    return grads, g_eps, logits_p, losses(logits_p, yp), z_probe


def reference(case: Case, params, model_state, x, y, xp, yp, scale=1.0):
    """Every metric of the engine's record, from the definitions, in float64."""
    L = len(case.acts)
    with jax.enable_x64(True):
        f64 = functools.partial(jax.tree.map, lambda a: np.asarray(a, np.float64))
        ydt = np.float64 if case.rating else np.int32
        grads, g_eps, logits_p, probe_losses, z_probe = jax.device_get(reference_core(
            case.forward, case.acts, case.rating, case.model["name"] == "resnet",
            f64(params), f64(model_state), f64(x), np.asarray(y, ydt), f64(xp),
            np.asarray(yp, ydt)))
    delta = [np.sqrt(np.mean(np.sum(np.asarray(g).reshape(BATCH, -1) ** 2, 1)))
             for g in g_eps]

    g_l, g_out = grouped_norms(grads, L)
    w_l, w_out = grouped_norms(params, L)
    ref = {"grad_norm/out": g_out, "weight_norm/out": w_out,
           "update_ratio/out": LR * g_out / w_out,
           "train/loss": probe_losses.mean()}
    if case.rating:
        ref["train/rmse"] = np.sqrt(probe_losses.mean()) * scale
    else:
        ref["train/acc"] = np.mean(logits_p.argmax(-1) == np.asarray(yp))
    for l, name in enumerate(case.acts):
        alpha = float(params[f"act{l}_alpha"]) if name == "prelu" else None
        z = z_probe[l].reshape(-1, z_probe[l].shape[-1])  # every position is an example
        h = phi_np(name, z, alpha)
        d = np.abs(dphi_np(name, z, alpha))
        sat = activations.info(name).saturation
        tail = np.zeros_like(z, bool) if sat is None else (z < sat[0]) | (z > sat[1])
        ref.update({
            f"grad_norm/{l}": g_l[l], f"weight_norm/{l}": w_l[l],
            f"update_ratio/{l}": LR * g_l[l] / w_l[l], f"delta_norm/{l}": delta[l],
            f"act_mean/{l}": h.mean(), f"act_std/{l}": h.std(),
            f"preact_mean/{l}": z.mean(), f"preact_std/{l}": z.std(),
            f"dead_frac/{l}": np.mean(np.all(d <= 1e-12, axis=0)),
            f"sat_frac/{l}": np.mean((d < 0.01 * dphi_max(name, alpha)) & tail)})
        if name == "prelu":
            ref[f"prelu_alpha/{l}"] = alpha
    return ref, grads


def flat(m):
    """Engine measurement with per-layer arrays [L] split into 'key/l' scalars."""
    out = {}
    for k, v in m.items():
        v = np.asarray(v, np.float64)
        if v.ndim:
            out.update({f"{k}/{l}": float(v[l]) for l in range(v.shape[0])})
        else:
            out[k] = float(v)
    return out


def case_reference(name):
    case = ALL_CASES[name]
    exp, state, (x, y, xp, yp), *_ = engine(name)
    return reference(case, state.params, state.model_state, x, y, xp, yp,
                     exp.dataset.meta.get("scale", 1.0))


# --------------------------------------------------------------------------- #
# Tests

def mismatches(name, skip=()):
    """Metrics where the engine's record and the reference disagree: {key: (engine, ref)}."""
    case = ALL_CASES[name]
    _, state, _, new_state, _, m, _ = engine(name)
    ref, grads = case_reference(name)
    rec = flat(m)
    expected = {f"{k}/{l}" for k in (*PER_LAYER, *PREACT) for l in range(len(case.acts))}
    expected |= {f"{k}/out" for k in OUT_METRICS}
    expected |= {"train/loss", "train/rmse" if case.rating else "train/acc"}
    expected |= {f"prelu_alpha/{l}" for l, a in enumerate(case.acts) if a == "prelu"}
    assert expected <= set(rec)
    assert expected == set(ref)
    # the step applied plain SGD with the reference gradient
    moved = jax.tree.map(lambda a, b, g: np.max(np.abs(
        (np.asarray(b, np.float64) - np.asarray(a, np.float64)) + LR * np.asarray(g))),
        state.params, new_state.params, grads)
    assert max(jax.tree.leaves(moved)) < 1e-5
    return {k: (rec[k], ref[k]) for k in sorted(ref)
            if k not in skip and rec[k] != pytest.approx(ref[k], rel=REL, abs=ABS)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_metric_matches_reference(name):
    bad = mismatches(name)
    assert not bad, f"{name}: engine vs reference {bad}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_cases_exercise_dead_saturated_and_learned(name):
    # Guard the fixtures: the edits really produce the phenomena the metrics must see.
    case = CASES[name]
    ref, _ = case_reference(name)
    for l, frac in case.dead.items():
        assert frac - 1e-9 <= ref[f"dead_frac/{l}"] < 1, l
    for l in case.saturated:
        assert 0 < ref[f"sat_frac/{l}"] < 1, l
    for l, a in enumerate(case.acts):
        if a == "relu":
            assert ref[f"sat_frac/{l}"] == 0.0
        if a in ("tanh", "sigmoid", "prelu"):
            assert ref[f"dead_frac/{l}"] == 0.0
        if a == "prelu":
            assert ref[f"prelu_alpha/{l}"] == pytest.approx(case.alpha[l])
    assert all(ref[f"delta_norm/{l}"] > 0 for l in range(len(case.acts)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_selected_metrics_only(name):
    case = CASES[name]
    *_, m, only = engine(name)
    train = {"train/loss", "train/rmse", "train/acc"} if case.rating else {"train/loss",
                                                                         "train/acc"}
    train |= {"logits_rms"}  # always measured, like train/*
    learned = {f"prelu_alpha/{l}" for l, a in enumerate(case.acts) if a == "prelu"}
    assert set(only) == {"grad_norm", "grad_norm/out"} | train | learned
    for k in ("grad_norm", "grad_norm/out", *train, *learned):
        np.testing.assert_array_equal(np.asarray(only[k]), np.asarray(m[k]), err_msg=k)


@pytest.mark.parametrize("name", sorted(HARD_SATURATION))
def test_hard_saturated_unit_metrics(name):
    ref, _ = case_reference(name)
    assert ref["dead_frac/1"] == 0.0 and ref["sat_frac/1"] >= 1 / 3
    bad = mismatches(name, skip={"dead_frac/1"})
    assert not bad, f"{name}: engine vs reference {bad}"


@pytest.mark.parametrize("name", sorted(HARD_SATURATION))
def test_hard_saturated_units_are_not_dead(name):
    ref, _ = case_reference(name)
    assert flat(engine(name)[5])["dead_frac/1"] == pytest.approx(ref["dead_frac/1"])
