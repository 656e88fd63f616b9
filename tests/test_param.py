"""Width parametrizations (model.param) of the MLP and the Transformer against hand-computed
tables.

A 3-layer MLP (input 40 -> 256 -> 256 -> 10, m = 256 / 64 = 4): initial standard deviations,
forward multipliers and per-layer learning-rate factors for SGD and Adam, each computed here
from Yang & Hu's tables as microsoft/mup implements them; mup at its base width is sp bitwise.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from actlab import analysis
from actlab.analysis import report
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


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def assert_first_step_factors(exp, s, optimizer, lr, factors, batch):
    """One training step from state s moves each parameter at `path` by its factor times the
    optimizer's own first step: SGD -lr g; Adam -lr g / (|g| + eps), i.e. -lr sign(g)."""
    x, y = jnp.asarray(exp.dataset.x_train[:batch]), jnp.asarray(exp.dataset.y_train[:batch])
    loss = step.loss_fn(exp.model, exp.head)
    new, out = step.train_step(s, (x, y), None, model=exp.model, tx=exp.tx, loss_fn=loss)
    for path, f in factors.items():
        g = np.asarray(_at(out["grads"], path), np.float64)
        base = g if optimizer == "sgd" else g / (np.abs(g) + 1e-8)
        moved = np.asarray(_at(new.params, path), np.float64) - np.asarray(_at(s.params, path))
        np.testing.assert_allclose(moved, -lr * f * base, rtol=2e-3, atol=1e-7, err_msg=path)


@pytest.mark.parametrize("param,optimizer", sorted(FACTORS))
def test_per_layer_learning_rates(param, optimizer):
    lr = 0.1 if optimizer == "sgd" else 1e-3
    exp, s = build(param, optimizer, lr)
    assert_first_step_factors(exp, s, optimizer, lr,
                              {(name,): f for name, f in FACTORS[param, optimizer].items()}, 64)


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


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
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


# --------------------------------------------------------------------------- #
# The Transformer encoder: width = dim, heads fixed (head width dim / heads), digit patches

T_DIM, T_BASE, T_HEADS = 64, 16, 2
T_M = T_DIM / T_BASE
PATCH = 16  # a 4 x 4 patch of one channel: the embedding's fan-in


def build_transformer(param, optimizer="sgd", lr=0.1, dim=T_DIM, act="relu"):
    cfg = make_config(model={"name": "transformer", "depth": 1, "dim": dim, "heads": T_HEADS,
                             "mlp_ratio": 2, "patch": 4, "param": param, "base_width": T_BASE},
                      activation={"name": act}, init={"name": "he"},
                      dataset={"name": "digits"}, optimizer={"name": optimizer, "lr": lr},
                      train={"batch_size": 32})
    exp = experiment.build(cfg)
    return exp, jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 0}]))


@pytest.mark.parametrize("param", ["sp", "mup", "ntk"])
def test_transformer_initial_standard_deviations(param):
    _, s = build_transformer(param)
    p, units = s.params, 2 * T_DIM
    # flax's lecun normal (1/fan_in) for the embedding, attention and readout; the MLP's
    # kernels follow init=he (2/fan_in); ntk multiplies each std by sqrt(fan_in), mup the
    # readout's by sqrt(m)
    sp = {("embed",): 1 / PATCH, ("layer0_attn", "query"): 1 / T_DIM,
          ("layer0_attn", "out"): 1 / T_DIM, ("layer0",): 2 / T_DIM,
          ("layer0_fc2",): 2 / units, ("out",): 1 / T_DIM}
    fan_in = {("embed",): PATCH, ("layer0_attn", "query"): T_DIM, ("layer0_attn", "out"): T_DIM,
              ("layer0",): T_DIM, ("layer0_fc2",): units, ("out",): T_DIM}
    for path, var in sp.items():
        if param == "ntk":
            var *= fan_in[path]
        if param == "mup" and path == ("out",):
            var *= T_M
        w = p
        for k in (*path, "kernel"):
            w = w[k]
        w = np.asarray(w, np.float64)
        assert np.std(w) == pytest.approx(np.sqrt(var), rel=5 / np.sqrt(2 * w.size)), path


def np_layer_norm(h, p):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def np_transformer(p, x, c_in, c_hid, c_fc2, c_out, logit_scale):
    """The one-block encoder on 4 x 4 patches of 8 x 8 digits, in float64, with the
    parametrization's multipliers on every product: (logits, attention logits)."""
    b = len(x)
    x = x.reshape(b, 2, 4, 2, 4, 1).transpose(0, 1, 3, 2, 4, 5).reshape(b, 4, PATCH)
    h = c_in * (x @ p["embed"]["kernel"]) + p["embed"]["bias"] + p["pos"]
    y = np_layer_norm(h, p["layer0_ln1"])
    a = p["layer0_attn"]
    q, k, v = (c_hid * np.einsum("btd,dhe->bthe", y, a[n]["kernel"]) + a[n]["bias"]
               for n in ("query", "key", "value"))
    s = np.einsum("bqhe,bkhe->bhqk", q, k) * logit_scale
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhe->bqhe", w, v)
    h = h + c_hid * np.einsum("bqhe,hed->bqd", o, a["out"]["kernel"]) + a["out"]["bias"]
    y = np_layer_norm(h, p["layer0_ln2"])
    z = c_hid * (y @ p["layer0"]["kernel"]) + p["layer0"]["bias"]
    h = h + c_fc2 * (np.maximum(z, 0) @ p["layer0_fc2"]["kernel"]) + p["layer0_fc2"]["bias"]
    h = np_layer_norm(h, p["final_ln"]).mean(1)
    return c_out * (h @ p["out"]["kernel"]) + p["out"]["bias"], s


@pytest.mark.parametrize("param", ["sp", "mup", "ntk"])
def test_transformer_forward_multipliers_and_attention_logits(param):
    exp, s = build_transformer(param)
    x = np.asarray(exp.dataset.x_train[:6], np.float64)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), s.params)
    d = T_DIM // T_HEADS
    c_in, c_hid, c_fc2, c_out, scale = {
        "sp": (1, 1, 1, 1, 1 / np.sqrt(d)),
        "mup": (1, 1, 1, 1 / T_M, np.sqrt(T_BASE // T_HEADS) / d),  # 1/d, sp's at the base
        "ntk": (1 / np.sqrt(PATCH), 1 / np.sqrt(T_DIM), 1 / np.sqrt(2 * T_DIM),
                1 / np.sqrt(T_DIM), 1 / np.sqrt(d))}[param]
    want, logits = np_transformer(p, x, c_in, c_hid, c_fc2, c_out, scale)
    got, aux, _ = exp.model.apply(s.params, s.model_state, jnp.asarray(x, jnp.float32),
                                  capture=True)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(aux["attn_logits"][0]), logits, rtol=1e-4, atol=1e-4)
    m = step.measure(s, {"grads": s.params, "updates": s.params}, jnp.asarray(x, jnp.float32),
                     jnp.asarray(exp.dataset.y_train[:6]), model=exp.model, head=exp.head,
                     selected=("q",))
    assert float(m["attn_logits_rms"][0]) == pytest.approx(np.sqrt(np.mean(logits ** 2)),
                                                           rel=1e-4)


# a Transformer's parameters by kind, with their factors under mup (m = 4): hidden kernels
# (attention, both MLP kernels) 1/m under Adam; vector-like ones (embedding kernel, positions,
# biases, norm scales, the readout kernel) m under SGD; the readout's bias neither
T_FACTORS = {
    "adam": {("layer0_attn", "query", "kernel"): 1 / T_M, ("layer0_attn", "out", "kernel"): 1 / T_M,
             ("layer0", "kernel"): 1 / T_M, ("layer0_fc2", "kernel"): 1 / T_M,
             ("embed", "kernel"): 1, ("pos",): 1, ("layer0", "bias"): 1,
             ("layer0_ln2", "scale"): 1, ("out", "kernel"): 1, ("out", "bias"): 1},
    "sgd": {("layer0_attn", "query", "kernel"): 1, ("layer0_fc2", "kernel"): 1,
            ("embed", "kernel"): T_M, ("pos",): T_M, ("layer0", "bias"): T_M,
            ("layer0_attn", "value", "bias"): T_M, ("final_ln", "scale"): T_M,
            ("out", "kernel"): T_M, ("out", "bias"): 1},
}


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
@pytest.mark.parametrize("optimizer", sorted(T_FACTORS))
def test_transformer_per_layer_learning_rates(optimizer):
    lr = 0.1 if optimizer == "sgd" else 1e-3
    exp, s = build_transformer("mup", optimizer, lr)
    assert_first_step_factors(exp, s, optimizer, lr, T_FACTORS[optimizer], 32)


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_transformer_mup_at_its_base_width_is_sp_bitwise(tmp_path):
    def records(param):
        cfg = make_config(model={"name": "transformer", "depth": 1, "dim": T_BASE,
                                 "heads": T_HEADS, "param": param, "base_width": T_BASE},
                          dataset={"name": "digits"}, train={"steps": 6, "log_every": 3})
        driver.run(cfg, tmp_path / param)
        return [{k: v for k, v in r.items() if k != "wall_time"}
                for r in read_records(tmp_path / param)]

    sp = records("sp")
    assert "attn_logits_rms/0" in sp[0]
    assert records("mup") == sp


@pytest.mark.slow  # eight small jobs and a report: run after the suite (-m slow)
def test_reduced_width_transfer_study(tmp_path, monkeypatch):
    # experiments/width_transfer at widths 64 and 256, relu, a 4-value grid and 40 steps; its
    # coordinate check for 3 steps. experiments/ is a package of the repository, not of actlab
    from test_studies import ROOT, study

    monkeypatch.syspath_prepend(str(ROOT))
    from experiments.width_transfer import summarise as study_summary

    lrs = [2 ** -10, 2 ** -8, 2 ** -6, 2 ** -4]
    for param in ("sp", "mup"):
        for width in (64, 256):
            common = (f"model.param={param}", f"model.width={width}", "activation=relu",
                      "train.seeds=2")
            driver.run(study("width_transfer", *common, "train.steps=40", "train.log_every=20",
                             f"train.vmap.optimizer.lr=[{','.join(map(str, lrs))}]"),
                       tmp_path / "lr" / f"{param}_{width}")
            driver.run(study("width_transfer", *common, "train.steps=3", "train.log_every=1",
                             "train.vmap.optimizer.lr=[0.00390625]"),
                       tmp_path / "coord" / f"{param}_{width}")
    page = report.build(tmp_path / "lr", replay=False)
    table = pd.read_csv(page.parent / "lr_transfer.csv")
    for row in table.itertuples():  # the optimum from summary.json, recomputed here
        s = json.loads((tmp_path / "lr" / f"{row.param}_{row.width}" / "summary.json").read_text())
        loss = {lr: np.mean([m["final_train_loss"] for m in s["seeds"]
                             if m["optimizer.lr"] == lr]) for lr in lrs}
        assert row.best_lr == pytest.approx(min(loss, key=loss.get))
    # mup is sp at its base width: the same losses for every rate
    w64 = table[table["width"] == 64].set_index("param")
    assert w64.at["mup", "best_loss"] == w64.at["sp", "best_loss"]
    text = study_summary.summarise([tmp_path / "lr", tmp_path / "coord"], tmp_path)
    assert "### Optimal learning rate per width" in text and "### Coordinate check (MLP)" in text
    assert (tmp_path / "lr_transfer.png").stat().st_size > 0
    slopes = study_summary.slope_rows(analysis.load_sweep(tmp_path / "coord"))
    logit = slopes.set_index("param")["logits"]
    assert logit["sp"] - logit["mup"] > 0.5  # sp's readout grows with width, mup's does not


# --------------------------------------------------------------------------- #
# The causal decoder: width = dim, heads fixed; GPT-2's 0.02 read as the base width's scale

G_DIM, G_BASE, G_HEADS, G_WINDOW = 64, 16, 2, 8
G_M = G_DIM / G_BASE


def build_gpt(param, optimizer="adam", lr=1e-3, dim=G_DIM, tie=True):
    cfg = make_config(model={"name": "gpt", "depth": 1, "dim": dim, "heads": G_HEADS,
                             "mlp_ratio": 2, "tie": tie, "param": param,
                             "base_width": G_BASE},
                      activation={"name": "gelu"},
                      dataset={"name": "text", "context": G_WINDOW},
                      optimizer={"name": optimizer, "lr": lr}, train={"batch_size": 16})
    exp = experiment.build(cfg)
    return exp, jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 0}]))


@pytest.mark.parametrize("param", ["sp", "mup"])
def test_gpt_initial_standard_deviations(param):
    p = build_gpt(param)[1].params
    hid = 0.02 / np.sqrt(G_M) if param == "mup" else 0.02  # 1/fan_in: var / m
    want = {("embed", "embedding"): 0.02, ("pos",): 0.02,
            ("layer0_attn", "query", "kernel"): hid, ("layer0", "kernel"): hid,
            ("layer0_attn", "out", "kernel"): hid / np.sqrt(2),  # residual: / sqrt(2 depth)
            ("layer0_fc2", "kernel"): hid / np.sqrt(2)}
    for path, std in want.items():
        w = np.asarray(_at(p, path), np.float64)
        assert np.std(w) == pytest.approx(std, rel=5 / np.sqrt(2 * w.size)), path


@pytest.mark.parametrize("tie", [True, False])
def test_gpt_mup_divides_the_logits_by_m(tie):
    # one-token windows: the softmax over a single key is 1 whatever the logit scale, so on
    # the same parameters mup's logits are sp's divided by m
    exp, s = build_gpt("mup", tie=tie)
    sp = exp.model.module.clone(parametrization="sp")
    x = jnp.asarray(exp.dataset.x_train[:4, :1])
    got = exp.model.module.apply({"params": s.params}, x)[0]
    want = np.asarray(sp.apply({"params": s.params}, x)[0], np.float64) / G_M
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6,
                               atol=1e-6 * np.abs(want).max())


def test_gpt_attention_logits_scale_against_numpy():
    from actlab.models import gpt

    rng = np.random.default_rng(0)
    b, t, n, d, scale = 2, 5, 2, 8, 0.5
    q, k, v = (rng.standard_normal((b, t, n, d)).astype(np.float32) for _ in range(3))
    s = np.einsum("bqnd,bknd->bnqk", q, k).astype(np.float64) * scale / np.sqrt(d)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    want = np.einsum("bnqk,bknd->bqnd", w, v)
    got = gpt.causal_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), scale)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


# under mup (m = 4) and Adam: the hidden kernels at 1/m, the token table (tied: input and
# readout), positions, biases and norm scales at 1; under SGD the vector-like ones at m
G_FACTORS = {
    "adam": {("layer0_attn", "query", "kernel"): 1 / G_M, ("layer0_attn", "out", "kernel"):
             1 / G_M, ("layer0", "kernel"): 1 / G_M, ("layer0_fc2", "kernel"): 1 / G_M,
             ("embed", "embedding"): 1, ("pos",): 1, ("layer0", "bias"): 1,
             ("layer0_ln2", "scale"): 1},
    "sgd": {("layer0", "kernel"): 1, ("embed", "embedding"): G_M, ("pos",): G_M,
            ("final_ln", "scale"): G_M},
}


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
@pytest.mark.parametrize("optimizer", sorted(G_FACTORS))
def test_gpt_per_layer_learning_rates(optimizer):
    lr = 0.1 if optimizer == "sgd" else 1e-3
    exp, s = build_gpt("mup", optimizer, lr)
    assert_first_step_factors(exp, s, optimizer, lr, G_FACTORS[optimizer], 16)


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_gpt_mup_at_its_base_width_is_sp_bitwise():
    (e_sp, s_sp), (e_mu, s_mu) = build_gpt("sp", dim=G_BASE), build_gpt("mup", dim=G_BASE)
    x, y = jnp.asarray(e_sp.dataset.x_train[:16]), jnp.asarray(e_sp.dataset.y_train[:16])
    steps = [step.train_step(s, (x, y), None, model=e.model, tx=e.tx,
                             loss_fn=step.loss_fn(e.model, e.head))[0]
             for e, s in ((e_sp, s_sp), (e_mu, s_mu))]
    for a, b in zip(jax.tree.leaves(steps[0].params), jax.tree.leaves(steps[1].params),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gpt_refuses_ntk_in_one_line():
    with pytest.raises(ConfigError, match="ntk"):
        build_gpt("ntk")
