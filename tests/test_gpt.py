"""The causal decoder: causality, its initial loss, parameter counts, the next-token head
against numpy, and training and sampling through the command line."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations, models
from actlab.cli import sample as sample_cli
from actlab.measure import heads
from actlab.models import gpt
from conftest import read_records

EPS32 = float(np.finfo(np.float32).eps)
BIN = Path(sys.executable).parent


def built(act="gelu", depth=2, vocab=64, window=16, **params):
    spec = activations.spec(act)
    return models.build("gpt", specs=(spec,) * depth, num_classes=vocab, input_shape=(window,),
                        depth=depth, **params)


def init(model, vocab=64, window=16, seed=0, batch=2):
    x = jax.random.randint(jax.random.PRNGKey(seed + 1), (batch, window), 0, vocab)
    params, state = jax.jit(model.init)(jax.random.PRNGKey(seed), x)
    return params, state, x


def shapes(model, vocab=64, window=16):
    """The parameters' shapes (nothing drawn)."""
    x = jnp.zeros((1, window), jnp.int32)
    return jax.eval_shape(lambda k: model.init(k, x)[0], jax.random.PRNGKey(0))


def n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("settings", [
    {"pos": "learned", "norm": "layer"},
    {"pos": "rope", "norm": "rms", "tie": False},
    {"pos": "learned", "norm": "dyt", "act": "swiglu"},
])
def test_no_logit_depends_on_a_later_token(settings):
    settings = dict(settings)
    model = built(settings.pop("act", "relu"), dim=16, heads=2, **settings)
    params, state, x = init(model)
    forward = jax.jit(lambda tokens: model.apply(params, state, tokens)[0])
    logits = np.asarray(forward(x))
    for t in (0, 5, 14):
        changed = x.at[:, t + 1:].set((x[:, t + 1:] + 1 + jnp.arange(15 - t)) % 64)
        other = np.asarray(forward(changed))
        # masked keys carry exactly zero weight: the logits up to t are bitwise the same
        np.testing.assert_array_equal(other[:, :t + 1], logits[:, :t + 1])
        assert np.abs(other[:, t + 1:] - logits[:, t + 1:]).max() > 1e-4  # later ones move


def numpy_forward(p, x, depth: int, heads: int):
    """GPT-2's forward in float64 numpy (learned positions, layer norm, relu, tied output):
    logits and each block's MLP pre-activation z and activation h."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x)
    b, t = x.shape

    def norm(v, q):
        mu = v.mean(-1, keepdims=True)
        return (v - mu) / np.sqrt(((v - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * q["scale"] \
            + q["bias"]

    def dense(v, q):
        return v @ q["kernel"] + q["bias"]

    h = p["embed"]["embedding"][x] + p["pos"][:t]
    zs, hs = [], []
    for l in range(depth):
        a, y = p[f"layer{l}_attn"], norm(h, p[f"layer{l}_ln1"])
        q, k, v = (dense(y, a[n]).reshape(b, t, heads, -1) for n in ("query", "key", "value"))
        s = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
        w = np.exp(s - s.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        h = h + dense(np.einsum("bnqk,bknd->bqnd", w, v).reshape(b, t, -1), a["out"])
        zs.append(dense(norm(h, p[f"layer{l}_ln2"]), p[f"layer{l}"]))
        hs.append(np.maximum(zs[-1], 0.0))
        h = h + dense(hs[-1], p[f"layer{l}_fc2"])
    return norm(h, p["final_ln"]) @ p["embed"]["embedding"].T, zs, hs


def test_forward_and_captures_equal_a_numpy_gpt():
    depth, heads = 2, 2
    model = built("relu", depth, 64, 16, dim=16, heads=heads)
    params, state, x = init(model, 64, 16, batch=3)
    logits, aux, _ = jax.jit(lambda p, x: model.apply(p, state, x, capture=True))(params, x)
    want, zs, hs = numpy_forward(params, x, depth, heads)
    # float32 against float64 through ~20 chained products of <= 64 terms: ~1e-5 relative
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-4, atol=1e-5 * scale)
    for l in range(depth):  # layer l's metrics read block l's MLP: z, h = relu(z), phi'(z)
        np.testing.assert_allclose(np.asarray(aux["z"][l]), zs[l], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(aux["h"][l]), hs[l], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(aux["dphi"][l]), (zs[l] > 0).astype(float))


def test_rotary_attention_scores_depend_on_the_offset_only():
    q = jax.random.normal(jax.random.PRNGKey(0), (1, 12, 2, 8))
    k = jax.random.normal(jax.random.PRNGKey(1), (1, 12, 2, 8))
    same_q, same_k = jnp.broadcast_to(q[:, :1], q.shape), jnp.broadcast_to(k[:, :1], k.shape)
    scores = np.asarray(jnp.einsum("bqnd,bknd->bnqk", gpt.rotary(same_q), gpt.rotary(same_k)))
    # one query and one key vector at every position: <R_t q, R_s k> = <R_{t-s} q, k>
    for offset in range(-5, 6):
        diagonal = np.diagonal(scores, offset, axis1=2, axis2=3)
        np.testing.assert_allclose(diagonal, diagonal[..., :1] * np.ones_like(diagonal),
                                   rtol=1e-5, atol=1e-5)
    assert abs(scores[0, 0, 3, 0] - scores[0, 0, 0, 0]) > 1e-3  # the offset matters
    np.testing.assert_allclose(np.linalg.norm(gpt.rotary(q), axis=-1),
                               np.linalg.norm(q, axis=-1), rtol=1e-5)  # a rotation
    np.testing.assert_array_equal(gpt.rotary(q)[:, 0], q[:, 0])  # position 0 stays


@pytest.mark.parametrize("tie", [True, False])
def test_loss_at_initialisation_is_about_log_vocab(tie):
    """With GPT-2's init every logit is z = h . w, h of unit RMS after the final layer norm
    and w ~ N(0, 0.02^2): z ~ N(0, s^2), s^2 = 0.02^2 dim. Then logsumexp(z) = ln V + s^2/2
    + O(s^3) and E[-z_y] = 0, so the mean loss over N random targets is ln V + s^2/2 up to
    about s / sqrt(N) (the standard error of the mean of z_y). A tied table gives each input
    token's own logit a head start (h holds its embedding), which the further s^2/2 covers."""
    vocab, window, dim, batch = 256, 32, 64, 16
    model = built("gelu", vocab=vocab, window=window, dim=dim, heads=4, tie=tie)
    params, state, x = init(model, vocab, window, batch=batch)
    y = jax.random.randint(jax.random.PRNGKey(7), (batch, window), 0, vocab)
    loss = float(heads.head("softmax", "next_token").loss(model.apply(params, state, x)[0], y))
    s2 = 0.02 ** 2 * dim
    n = batch * window
    assert abs(loss - (math.log(vocab) + s2 / 2)) <= 4 * math.sqrt(s2 / n) + s2 / 2


def test_next_token_measures_against_numpy():
    vocab = 40
    model = built("relu", vocab=vocab, window=12, dim=16, heads=2)
    params, state, x = init(model, vocab, 12, batch=5)
    logits = jax.jit(lambda x: model.apply(params, state, x)[0])(x) * 40.0  # far from uniform
    y = jax.random.randint(jax.random.PRNGKey(3), x.shape, 0, vocab)
    m = heads.head("softmax", "next_token").measures(logits, y)
    z = np.asarray(logits, np.float64)
    top = z.max(-1, keepdims=True)
    logp = z - top - np.log(np.exp(z - top).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, np.asarray(y)[..., None], -1).mean()
    # float32 log-softmax and mean: a few ulps per summand of V terms and N positions
    rtol = 4 * (math.log2(vocab) + math.log2(y.size)) * EPS32
    np.testing.assert_allclose(float(m["loss"]), nll, rtol=rtol)
    np.testing.assert_allclose(float(m["bpb"]), nll / math.log(2), rtol=rtol)
    np.testing.assert_allclose(float(m["ppl"]), math.exp(nll), rtol=2 * rtol * max(1, nll))
    assert float(m["acc"]) == np.mean(z.argmax(-1) == np.asarray(y))


def block_mlp(params, l: int) -> int:
    return n_params(params[f"layer{l}"]) + n_params(params[f"layer{l}_fc2"])


def test_parameter_count_by_hand_and_the_matched_gated_block():
    v, t, d, ratio, depth = 64, 16, 24, 4, 2
    h = ratio * d
    p = shapes(built("gelu", depth, v, t, dim=d, heads=3, mlp_ratio=ratio), v, t)
    block = 4 * (d * d + d) + 2 * 2 * d + (d * h + h) + (h * d + d)  # attention, 2 norms, MLP
    assert n_params(p) == v * d + t * d + depth * block + 2 * d  # tied: no output matrix
    untied = built("gelu", depth, v, t, dim=d, heads=3, mlp_ratio=ratio, tie=False)
    assert n_params(shapes(untied, v, t)) == n_params(p) + d * v
    for act in ("swiglu", "geglu", "reglu"):
        g = shapes(built(act, depth, v, t, dim=d, heads=3, mlp_ratio=ratio), v, t)
        u = g["layer0_fc2"]["kernel"].shape[0]
        # a gated unit costs 3 d + 2 (two columns of the first kernel with their biases, a
        # row of the second): the closest count is within half a unit of the elementwise one
        assert abs(block_mlp(g, 0) - block_mlp(p, 0)) <= (3 * d + 2) / 2
        assert abs(u - 2 * h / 3) <= 1  # Shazeer's 2/3 of the elementwise width
        same = built(act, depth, v, t, dim=d, heads=3, mlp_ratio=ratio, glu_width="same")
        assert shapes(same, v, t)["layer0_fc2"]["kernel"].shape[0] == h


def test_gpt2_initialisation_scales_residual_projections_by_depth():
    depth, d = 8, 64
    p, _, _ = init(built("gelu", depth, 64, 16, dim=d, heads=4), 64, 16)
    std = {k: float(np.std(np.asarray(a))) for k, a in (
        ("embed", p["embed"]["embedding"]), ("query", p["layer0_attn"]["query"]["kernel"]),
        ("fc1", p["layer0"]["kernel"]), ("proj", p["layer0_attn"]["out"]["kernel"]),
        ("fc2", p["layer0_fc2"]["kernel"]))}
    out = 0.02 / math.sqrt(2 * depth)
    for k, want in (("embed", 0.02), ("query", 0.02), ("fc1", 0.02), ("proj", out),
                    ("fc2", out)):
        n = {"embed": 64 * d, "query": d * d, "fc1": d * 4 * d, "proj": d * d,
             "fc2": 4 * d * d}[k]
        # the sample std of n normal draws is within 5 / sqrt(2 n) of sigma, relatively
        assert abs(std[k] / want - 1) < 5 / math.sqrt(2 * n), k
    with pytest.raises(models.ModelError, match="GPT-2's initialisation"):
        models.build("gpt", specs=(activations.spec("relu"),), num_classes=8,
                     input_shape=(4,), init=("critical", "normal", 1.0, 1.7), depth=1)


def test_labels_put_each_block_in_its_layer_and_the_tied_table_out():
    model = built("relu", 2, dim=16, heads=2)
    roles = model.labels(shapes(model))
    assert roles["embed"]["embedding"] == models.Role("out", kernel=True)
    assert roles["layer1_attn"]["query"]["kernel"] == models.Role("layer", 1, kernel=True)
    assert roles["layer0_fc2"]["bias"] == models.Role("layer", 0)
    assert roles["pos"] == models.Role("other")


def test_greedy_generation_is_the_argmax_continuation():
    model = built("gelu", 1, 32, 8, dim=16, heads=2)
    params, state, _ = init(model, 32, 8)
    prompt = np.asarray([3, 1, 4, 1, 5, 9], np.int32)
    out = gpt.generate(model, params, state, prompt, 10)
    forward = jax.jit(lambda w: model.apply(params, state, w)[0])
    seq = list(prompt)  # by hand: the last (at most 8) tokens re-read for every token
    for _ in range(10):
        window = jnp.asarray(seq[-8:], jnp.int32)[None]
        seq.append(int(np.argmax(np.asarray(forward(window))[0, -1])))
    np.testing.assert_array_equal(out, seq[6:])
    drawn = [gpt.generate(model, params, state, prompt, 10, 1.0, jax.random.PRNGKey(k))
             for k in (1, 1, 2)]
    np.testing.assert_array_equal(drawn[0], drawn[1])
    assert not np.array_equal(drawn[0], drawn[2])


# --------------------------------------------------------------------------- #
# Through the command line: train on the bundled text, then sample

@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "run"
    p = subprocess.run(
        [str(BIN / "actlab-train"), "model=gpt", "dataset=text", "dataset.context=32",
         "model.depth=1", "model.dim=32", "model.heads=2", "optimizer.lr=1e-2",
         "train.steps=120", "train.batch_size=16", "train.log_every=40",
         "train.eval_every=40", "train.probe_size=8", "train.checkpoint_every=120",
         "train.target=eval/bpb<=6.5", "train.objective=final_eval_bpb",
         f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return out


def test_training_on_the_bundled_text_lowers_eval_bpb(lm_run):
    evals = [r for r in read_records(lm_run) if "eval/bpb" in r]
    bpb = [r["eval/bpb"] for r in evals]
    assert [r["step"] for r in evals] == [0, 40, 80, 120]
    # about ln 256 nats = 8 bits per byte at initialisation; a little less, as the tied table
    # gives each byte's own logit a head start and the text repeats bytes (runs of spaces)
    assert 7.5 < bpb[0] < 8.05
    assert all(b < a for a, b in zip(bpb, bpb[1:], strict=False)) and bpb[-1] < 6.5
    for r in evals:
        assert r["eval/ppl"] == pytest.approx(2.0 ** r["eval/bpb"], rel=1e-5)
    last = read_records(lm_run)[-1]
    for key in ("grad_norm/0", "dead_frac/0", "q/0", "erank/0", "delta_norm/0", "logits_rms"):
        assert np.isfinite(last[key]), key
    s = json.loads((lm_run / "summary.json").read_text())
    member = s["seeds"][0]
    assert member["steps_to_target"] is not None and member["final_eval_bpb"] == bpb[-1]
    assert member["best_eval_bpb"] == min(bpb)


def test_actlab_sample_prints_a_deterministic_greedy_continuation(lm_run, capsys):
    p = subprocess.run([str(BIN / "actlab-sample"), str(lm_run), "--prompt", "The ",
                        "--tokens", "40"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("The ") and len(p.stdout.encode()) >= len("The ") + 40
    assert sample_cli.sample(lm_run, "The ", 40) + "\n" == p.stdout  # greedy: the same text
    hot = [sample_cli.sample(lm_run, "The ", 40, temperature=1.5, seed=k) for k in (1, 2)]
    assert hot[0] != hot[1] and p.stdout[:-1] not in hot  # each seed its own draw
    for argv, message in (([], "--temperature must be >= 0"),
                          (["--member", "1"], "--member 1: the run has members 0..0")):
        with pytest.raises(SystemExit) as e:
            sample_cli.sample_main([str(lm_run), "--prompt", "The ", "--temperature",
                                    "-1" if not argv else "0", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_actlab_sample_retrains_a_run_that_kept_no_checkpoint(lm_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(lm_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    assert sample_cli.sample(copy, "The ", 40) == sample_cli.sample(lm_run, "The ", 40)
