"""The curvature, gradient-noise and weight-spectrum probes as the engine runs them.

Two runs: a tiny tanh MLP on digits with every probe on (records checked against a
dense Hessian, per-example gradients and numpy SVDs of the replayed parameters), and
full-batch gradient descent with the squared loss at two learning rates (vmapped), where
the sharpness rises to 2/lr and stays near it: the edge of stability (Cohen et al. 2021).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from threadpoolctl import threadpool_limits

from actlab import analysis
from actlab.analysis.plots import probes as plots_probes
from actlab.config import ProbesConfig
from actlab.measure import heads
from actlab.runs import driver as train
from actlab.runs import retrain
from actlab.runs.records import DENSITY_FILE
from conftest import make_config, read_records

STEPS, PROBE_EVERY, LOG_EVERY = 20, 10, 5
WIDTH = 10  # layer kernels [64, 10] and [10, 10]: at least 10 eigenvalues, so alpha is defined
PROBE_STEPS = {0, 10, 20}
HESSIAN = {"every": PROBE_EVERY, "k": 3, "iters": 30, "samples": 16}
LAYERS = 2
PER_LAYER = ("hessian/top_eig", "hessian/trace", "hessian/trace_se", "gsnr",
             "weights/spectral_norm", "weights/stable_rank", "weights/alpha")
PREFIXES = ("hessian/", "gsnr/", "weights/", "noise_scale/")


def all_probes_config():
    return make_config(
        activation={"name": "tanh"}, model={"depth": LAYERS, "width": WIDTH},
        dataset={"name": "digits"},
        train={"steps": STEPS, "log_every": LOG_EVERY, "eval_every": 10, "probe_size": 64},
        probes={"hessian": HESSIAN, "gsnr": {"every": PROBE_EVERY, "chunk": 16},
                "weights": {"every": PROBE_EVERY},
                "noise_scale": {"every": PROBE_EVERY, "chunk": 32}})


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """The all-probes run: config, records, summary, and the replayed final parameters."""
    run_dir = tmp_path_factory.mktemp("probed")
    cfg = all_probes_config()
    summary = train.run(cfg, run_dir)
    # measurements never change the trajectory: a replay without them gives the same params
    plain = dataclasses.replace(cfg, probes=ProbesConfig(),
                                train=dataclasses.replace(cfg.train, metrics=()))
    exp, snaps = retrain.retrain(plain, [STEPS])
    params = jax.tree.map(lambda a: jnp.asarray(a[0]), snaps[STEPS]["params"])
    return cfg, exp, run_dir, read_records(run_dir), summary, params


def probe_batch(exp, cfg):
    p = cfg.train.probe_size
    return jnp.asarray(exp.dataset.x_train[:p]), jnp.asarray(exp.dataset.y_train[:p])


def test_every_probe_key_is_recorded_at_probe_steps_only(probed):
    _, _, _, records, _, _ = probed
    assert {r["step"] for r in records} == set(range(0, STEPS + 1, LOG_EVERY))
    for r in records:
        keys = {k for k in r if k.startswith(PREFIXES)}
        if r["step"] not in PROBE_STEPS:
            assert not keys, (r["step"], keys)
            continue
        want = {"hessian/top_eig", "hessian/trace", "hessian/trace_se", "gsnr/mean",
                "noise_scale/b_simple", "noise_scale/trace_cov", "noise_scale/grad_sq",
                *(f"hessian/eig_{i}" for i in range(HESSIAN["k"])),
                *(f"{k}/{l}" for k in PER_LAYER for l in range(LAYERS))}
        assert keys == want
        assert all(r[k] is not None and np.isfinite(r[k]) for k in keys)  # NaN: None
        eigs = [r[f"hessian/eig_{i}"] for i in range(HESSIAN["k"])]
        assert eigs == sorted(eigs, reverse=True) and r["hessian/top_eig"] == eigs[0]


def dense_hessian(loss, params):
    flat, unravel = ravel_pytree(params)
    h = jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat)
    return np.asarray(h, np.float64), unravel


def test_curvature_records_match_a_dense_hessian_of_the_final_params(probed):
    cfg, exp, _, records, _, params = probed
    x, y = probe_batch(exp, cfg)
    loss_of = heads.of_config(cfg, exp.dataset).loss

    def loss(p):
        return loss_of(exp.model.apply(p, {}, x)[0], y)

    h, unravel = dense_hessian(loss, params)
    with threadpool_limits(1):  # LAPACK's threads only slow a small matrix on a busy machine
        eigs = np.linalg.eigvalsh(h)[::-1]
        blocks = {}
        for l, name in enumerate(("in", "hidden1")):
            mask = {k: jnp.full(v.shape, float(k.startswith(f"{name}_")))
                    for k, v in params.items()}
            idx = np.flatnonzero(np.asarray(ravel_pytree(mask)[0]))
            block = h[np.ix_(idx, idx)]
            blocks[l] = (np.linalg.eigvalsh(block)[-1], np.trace(block))
    r = next(r for r in records if r["step"] == STEPS)
    np.testing.assert_allclose([r[f"hessian/eig_{i}"] for i in range(HESSIAN["k"])],
                               eigs[:HESSIAN["k"]], rtol=2e-3)
    se = r["hessian/trace_se"]
    assert 0 < se < 0.3 * np.trace(h)
    assert abs(r["hessian/trace"] - np.trace(h)) < 3 * se
    # layer l's block: its kernel and bias (in_*: layer 0, hidden1_*: layer 1)
    for l, (top, trace) in blocks.items():
        assert r[f"hessian/top_eig/{l}"] == pytest.approx(top, rel=2e-3)
        assert abs(r[f"hessian/trace/{l}"] - trace) < 3 * r[f"hessian/trace_se/{l}"]


def test_gsnr_and_weight_spectra_match_the_final_params(probed):
    cfg, exp, _, records, _, params = probed
    x, y = probe_batch(exp, cfg)
    loss_of = heads.of_config(cfg, exp.dataset).loss
    flat, unravel = ravel_pytree(params)

    def one(f, xi, yi):
        return loss_of(exp.model.apply(unravel(f), {}, xi[None])[0], yi[None])

    g = np.asarray(jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0, 0)))(flat, x, y),
                   np.float64)
    ratio = g.mean(0) ** 2 / (g.var(0) + 1e-5)
    r = next(r for r in records if r["step"] == STEPS)
    assert r["gsnr/mean"] == pytest.approx(ratio.mean(), rel=2e-3)
    for l, name in enumerate(("in", "hidden1")):
        mask = {k: jnp.full(v.shape, float(k.startswith(f"{name}_")))
                for k, v in params.items()}
        idx = np.flatnonzero(np.asarray(ravel_pytree(mask)[0]))
        assert r[f"gsnr/{l}"] == pytest.approx(ratio[idx].mean(), rel=2e-3)
        with threadpool_limits(1):
            s = np.linalg.svd(np.asarray(params[f"{name}_kernel"], np.float64),
                              compute_uv=False)
        assert r[f"weights/spectral_norm/{l}"] == pytest.approx(s[0], rel=1e-5)
        assert r[f"weights/stable_rank/{l}"] == pytest.approx(np.sum(s**2) / s[0] ** 2,
                                                              rel=1e-5)


def test_density_file_holds_one_quadrature_per_probe_step(probed):
    _, _, run_dir, records, _, _ = probed
    df = analysis.load_density(run_dir)
    assert (run_dir / DENSITY_FILE).is_file()
    assert sorted(df["step"]) == sorted(PROBE_STEPS) and set(df["seed"]) == {0}
    shape = (HESSIAN["samples"], HESSIAN["iters"])
    for row in df.itertuples():
        assert row.nodes.shape == row.weights.shape == shape
        assert np.isfinite(row.nodes).all()
        np.testing.assert_allclose(row.weights.sum(1), 1, rtol=1e-4)
    # the first moment of the quadrature estimates tr(H) / n, as Hutchinson's trace does
    n = next(r for r in records if r["step"] == 0)
    last = df[df["step"] == 0].iloc[0]
    n_params = (64 + 1) * WIDTH + (WIDTH + 1) * WIDTH + (WIDTH + 1) * 10
    slq_trace = n_params * np.mean(np.sum(last.weights * last.nodes, 1))
    assert abs(slq_trace - n["hessian/trace"]) < 6 * n["hessian/trace_se"]
    fig = plots_probes.hessian_density(run_dir)
    assert len(fig.axes[0].lines) == len(PROBE_STEPS)


# ---------------------------------------------------------------------------------------
# The edge of stability: full-batch gradient descent, squared loss, two learning rates

LRS = [0.12, 0.13]  # 2/lr = 16.7 and 15.4; the sharpness starts near 13 and rises
EOS_STEPS = 500


@pytest.fixture(scope="module")
def eos(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eos")
    cfg = make_config(
        activation={"name": "tanh"}, model={"depth": 2, "width": 32, "loss": "mse"},
        dataset={"name": "spiral", "num_points": 200}, optimizer={"name": "sgd", "lr": LRS[0]},
        train={"steps": EOS_STEPS, "log_every": 10, "eval_every": 0, "target": None,
               "batch_size": 1000, "probe_size": 1000,  # both: the whole training split
               "vmap": {"optimizer": {"lr": LRS}}},
        probes={"hessian": {"every": 10, "k": 1, "iters": 20, "samples": 2}})
    summary = train.run(cfg, run_dir)
    return cfg, run_dir, read_records(run_dir), summary


def test_sharpness_rises_to_two_over_lr_and_stays_there(eos):
    _, _, records, summary = eos
    for lr in LRS:
        mine = [r for r in records if r["optimizer.lr"] == lr]
        assert mine[-1]["step"] == EOS_STEPS
        first = mine[0]["hessian/top_eig"]
        assert first < 0.9 * 2 / lr  # it starts below the limit: progressive sharpening
        assert mine[-1]["hessian/top_eig"] == pytest.approx(2 / lr, rel=0.2)
    assert summary["status"] == "completed"


def test_eos_step_is_the_first_logged_crossing_of_two_over_lr(eos):
    _, _, records, summary = eos
    got = {m["optimizer.lr"]: m["eos_step"] for m in summary["seeds"]}
    for lr in LRS:
        crossings = [r["step"] for r in records if r["optimizer.lr"] == lr
                     and r.get("hessian/top_eig") is not None and r["hessian/top_eig"] >= 2 / lr]
        assert crossings and got[lr] == crossings[0]
    assert 0 < got[LRS[1]] < got[LRS[0]] < EOS_STEPS  # a larger rate: a lower limit, sooner
    assert summary["aggregate"]["eos_step"]["n"] == len(LRS)


def test_mse_loss_is_half_the_squared_error_summed_over_classes(eos):
    cfg, _, records, _ = eos
    exp, snaps = retrain.retrain(cfg, [0])  # step 0: the initial parameters, nothing trained
    x = np.asarray(exp.dataset.x_train)
    y = np.asarray(exp.dataset.y_train)
    params = jax.tree.map(lambda a: jnp.asarray(a[0]), snaps[0]["params"])
    out = np.asarray(exp.model.apply(params, {}, jnp.asarray(x))[0], np.float64)
    onehot = np.eye(out.shape[1])[y]
    want = 0.5 * np.mean(np.sum((out - onehot) ** 2, axis=1))
    r = next(r for r in records if r["step"] == 0 and r["optimizer.lr"] == LRS[0])
    assert r["train/loss"] == pytest.approx(want, rel=1e-5)
    assert r["train/acc"] == pytest.approx(np.mean(out.argmax(1) == y), abs=1e-6)
    h = heads.head("softmax", loss="mse")
    assert float(h.loss(jnp.asarray(out, jnp.float32), jnp.asarray(y))) == pytest.approx(
        want, rel=1e-5)


def test_sharpness_plot_draws_each_rate_and_its_limit(eos):
    _, run_dir, _, _ = eos
    fig = plots_probes.sharpness(analysis.load_run(run_dir, cache=False))
    ax = fig.axes[0]
    limits = sorted(line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == "--")
    assert limits == pytest.approx(sorted(2 / lr for lr in LRS))
    assert len(ax.lines) == 2 * len(LRS)


def test_array_file_keeps_the_lines_before_a_resumed_step(tmp_path):
    from actlab.runs.records import ArrayFile

    path = tmp_path / DENSITY_FILE
    lines = [{"step": s, "seed": 0, "nodes": [[float(s)]], "weights": [[1.0]]}
             for s in (0, 5, 10, 15)]
    ArrayFile(path).write(lines)
    ArrayFile(path, start=10)  # a resume from the checkpoint of step 10
    assert list(analysis.load_density(tmp_path)["step"]) == [0, 5]
    ArrayFile(path)  # a fresh start
    assert not path.exists() and analysis.load_density(tmp_path).empty
