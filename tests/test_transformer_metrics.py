"""The Transformer measurements (actlab.measure.transformer) against numpy on known arrays,
and the families as the engine logs them for model=gpt and model=transformer."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations, models
from actlab.config import METRICS
from actlab.measure import transformer as tm
from actlab.measure.step import measure

EPS32 = float(np.finfo(np.float32).eps)
RNG = np.random.default_rng(0)


def close(a, b, n=1):
    """Equal to float32 rounding of a reduction over n terms."""
    assert float(a) == pytest.approx(float(b), rel=8 * EPS32 * math.sqrt(n), abs=1e-7)


def test_relu_layer_with_known_zeros():
    # 3 examples x 4 tokens x 5 units; unit 1 and 3 never fire, unit 0 fires once
    h = np.abs(RNG.normal(size=(3, 4, 5))).astype(np.float32) + 0.1
    h[..., 1] = 0.0
    h[..., 3] = 0.0
    h[:, :, 0] = 0.0
    h[2, 3, 0] = 0.7
    h[0, 0, 2] = 1e-9  # below 1e-6 of the max: counts as zero
    sparsity, lazy = tm.ffn_sparsity(jnp.asarray(h))
    zeros = 2 * 12 + 11 + 1
    assert float(sparsity) == pytest.approx(zeros / 60, abs=1e-7)
    assert float(lazy) == pytest.approx(2 / 5, abs=1e-7)
    s, z = tm.ffn_sparsity(jnp.zeros((2, 3, 4)))  # an all-zero layer: wholly sparse and lazy
    assert (float(s), float(z)) == (1.0, 1.0)


def test_outlier_kurtosis_against_numpy_and_limits():
    x = RNG.normal(size=(4, 8, 16)).astype(np.float32) * np.linspace(0.1, 3.0, 16)
    s2 = np.mean(np.square(x.astype(np.float64)), axis=(0, 1))
    close(tm.outlier_kurtosis(jnp.asarray(x)), np.mean(s2 ** 2) / np.mean(s2) ** 2, 16)
    one = np.zeros((2, 3, 10), np.float32)
    one[..., 4] = RNG.normal(size=(2, 3))
    close(tm.outlier_kurtosis(jnp.asarray(one)), 10.0)  # one channel holds everything: D
    same = np.ones((2, 3, 10), np.float32) * np.array([1, -1] * 5, np.float32)
    close(tm.outlier_kurtosis(jnp.asarray(same)), 1.0)  # every channel the same size


def test_massive_activation_found_with_its_position():
    x = RNG.normal(size=(3, 6, 8)).astype(np.float32)
    x[1, 0, 5] = -4000.0  # one massive entry, on the first token of example 1
    ratio, pos = tm.massive(jnp.asarray(x))
    a = np.abs(x.astype(np.float64))
    assert float(ratio) == pytest.approx(a.max() / np.median(a), rel=1e-5)
    assert float(ratio) > 1000
    assert float(pos) == 0.0
    x[2, 4, 1] = 9000.0
    assert float(tm.massive(jnp.asarray(x))[1]) == 4.0


def numpy_entropy(logits, mask):
    b, n, t, _ = logits.shape
    out = []
    for i, j, q in itertools.product(range(b), range(n), range(t)):
        keys = [k for k in range(t) if mask is None or mask[q, k]]
        a = logits[i, j, q, keys].astype(np.float64)
        p = np.exp(a - a.max())
        p /= p.sum()
        out.append(-np.sum(p * np.log(p)))
    return np.mean(out)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_entropy_and_logit_rms_against_numpy(causal):
    t = 5
    logits = RNG.normal(size=(2, 3, t, t)).astype(np.float32) * 2
    mask = np.tril(np.ones((t, t), bool)) if causal else None
    jmask = None if mask is None else jnp.asarray(mask)
    close(tm.attn_entropy(jnp.asarray(logits), jmask), numpy_entropy(logits, mask), t)
    valid = np.ones((t, t), bool) if mask is None else mask
    rms = np.sqrt(np.mean(np.square(logits.astype(np.float64))[..., valid]))
    close(tm.attn_logits_rms(jnp.asarray(logits), jmask), rms, logits.size)
    # equal logits: uniform attention, ln(keys seen) per query
    flat = np.zeros_like(logits)
    uniform = np.mean([math.log(q + 1) for q in range(t)]) if causal else math.log(t)
    close(tm.attn_entropy(jnp.asarray(flat), jmask), uniform, t)


def test_token_cosine_against_numpy_and_limits():
    x = RNG.normal(size=(3, 5, 7)).astype(np.float32) + 0.5
    x[2, 1] = 0.0  # a zero vector counts 0
    ref = []
    for p in range(3):
        cos = []
        for i, j in itertools.permutations(range(5), 2):
            a, b = x[p, i].astype(np.float64), x[p, j].astype(np.float64)
            den = np.linalg.norm(a) * np.linalg.norm(b)
            cos.append(a @ b / den if den > 0 else 0.0)
        ref.append(np.mean(cos))
    close(tm.token_cosine(jnp.asarray(x)), np.mean(ref), 35)
    same = np.broadcast_to(RNG.normal(size=(1, 1, 7)), (2, 4, 7)).astype(np.float32)
    close(tm.token_cosine(jnp.asarray(same)), 1.0, 16)  # collapsed: every token alike
    assert np.isnan(float(tm.token_cosine(jnp.ones((2, 1, 3)))))


def test_every_family_is_part_of_all():
    assert set(tm.FAMILIES) <= set(METRICS)


class _State:
    def __init__(self, params, model_state):
        self.params, self.model_state = params, model_state
        self.step = jnp.asarray(0)
        self.consts: dict = {}


def probe_metrics(name, act, input_shape, x, num_classes, **params):
    spec = activations.spec(act)
    model = models.build(name, specs=(spec, spec), num_classes=num_classes,
                         input_shape=input_shape, depth=2, **params)
    p, s = model.init(jax.random.PRNGKey(0), x)
    return model, p, s


def families(model, p, s, x):
    """The families, computed from the model's own captures on x."""
    _, aux, _ = model.apply(p, s, x, capture=True)
    return {k: np.asarray(v) for k, v in tm.transformer_metrics(aux, tm.FAMILIES).items()}


def test_gpt_at_initialisation_attends_uniformly_and_relu_is_half_sparse():
    window = 16
    x = jax.random.randint(jax.random.PRNGKey(1), (64, window), 0, 64)
    out = {}
    for act in ("relu", "gelu"):
        model, p, s = probe_metrics("gpt", act, (window,), x, 64, dim=32, heads=2)
        out[act] = families(model, p, s, x)
    relu, gelu = out["relu"], out["gelu"]
    assert set(relu) == {"ffn_sparsity", "ffn_lazy", "outlier_kurtosis", "massive_ratio",
                         "massive_pos", "attn_entropy", "token_cosine"}
    for v in relu.values():
        assert v.shape == (2,)
    # N(0, 0.02^2) queries and keys: logits near 0, attention near uniform over keys 0..t
    uniform = np.mean([math.log(t + 1) for t in range(window)])
    np.testing.assert_allclose(relu["attn_entropy"], uniform, rtol=1e-3)
    # zero biases and symmetric pre-activations: about half the relu outputs are exactly 0
    assert np.all(np.abs(relu["ffn_sparsity"] - 0.5) < 0.05)
    assert np.all(relu["ffn_lazy"] == 0.0)
    assert np.all(gelu["ffn_sparsity"] < 1e-3)  # gelu is zero only at 0
    assert np.all(relu["massive_pos"] >= 0) and np.all(relu["massive_pos"] < window)


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_encoder_has_the_families_and_the_mlp_has_none():
    x = jnp.asarray(RNG.normal(size=(8, 10)).astype(np.float32))
    model, p, s = probe_metrics("transformer", "relu", (10,), x, 3, dim=16, heads=2)
    got = families(model, p, s, x)
    assert {"ffn_sparsity", "attn_entropy", "token_cosine"} <= set(got)
    mlp, pm, sm = probe_metrics("mlp", "relu", (10,), x, 3, width=8)
    _, aux, _ = mlp.apply(pm, sm, x, capture=True)
    assert tm.transformer_metrics(aux, tm.FAMILIES) == {}


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_measure_logs_causal_attention_rms_over_the_keys_seen():
    window = 8
    x = jax.random.randint(jax.random.PRNGKey(2), (16, window), 0, 32)
    model, p, s = probe_metrics("gpt", "gelu", (window,), x, 32, dim=16, heads=2)
    _, aux, _ = model.apply(p, s, x, capture=True)
    mask = np.tril(np.ones((window, window), bool))
    ref = [np.sqrt(np.mean(np.square(np.asarray(a, np.float64))[..., mask]))
           for a in aux["attn_logits"]]
    from actlab.measure import heads
    head = heads.head("softmax", heads.NEXT_TOKEN)
    out = {"grads": p, "updates": p, "grad_eps": None}
    m = measure(_State(p, s), out, x, x, model=model, head=head, selected=("q",))
    np.testing.assert_allclose(np.asarray(m["attn_logits_rms"]), ref, rtol=1e-5)
