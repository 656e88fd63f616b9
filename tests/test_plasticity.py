"""Task sequences and the interventions against lost plasticity, against hand computations.

Transforms: reproducible from the seed, different across tasks, equal to numpy indexing.
ReDo resets exactly the dormant units (weights in and out, optimizer moments) and nothing
else; continual backpropagation's utility over two steps equals a numpy computation;
shrink-and-perturb and L2-to-init against their formulas; a sequence's records, task ends
and summary; a run interrupted mid-sequence resumes bitwise.
"""

from __future__ import annotations

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab.config import ConfigError, TaskConfig
from actlab.data import tasks as tasks_lib
from actlab.engine import cadence, experiment, loop, step
from actlab.engine.state import STREAM_PLASTICITY, step_key
from actlab.runs import driver
from conftest import make_config, read_records


def member0(exp):
    return jax.tree.map(lambda a: a[0], experiment.initial_state(exp, [{"seed": 0}]))


def plastic_exp(method, dataset="spiral", width=6, **settings):
    cfg = make_config(model={"depth": 2, "width": width}, dataset={"name": dataset},
                      plasticity={"method": method, **settings},
                      train={"batch_size": 16, "probe_size": 16})
    return experiment.build(cfg)


def seq(kind, **kw):
    return TaskConfig(name="continual", kind=kind, num_tasks=5, steps_per_task=10, seed=3, **kw)


# --------------------------------------------------------------------------- #
# Task transforms


@pytest.mark.parametrize("kind", ["permuted_inputs", "shuffled_labels", "class_incremental",
                                  "noisy_inputs"])
def test_a_tasks_transform_is_reproducible_from_its_seed_and_differs_across_tasks(kind):
    t = tasks_lib.Tasks(seq(kind), num_classes=10, input_shape=(4, 5))
    again = tasks_lib.Tasks(seq(kind), num_classes=10, input_shape=(4, 5))
    other_seed = tasks_lib.Tasks(dataclasses.replace(seq(kind), seed=4), 10, (4, 5))
    draws = [jax.tree.map(np.asarray, t.params(jnp.int32(i))) for i in range(5)]
    for i, d in enumerate(draws):
        (name, arr), = d.items()
        np.testing.assert_array_equal(arr, np.asarray(again.params(jnp.int32(i))[name]))
        assert not np.array_equal(arr, np.asarray(other_seed.params(jnp.int32(i))[name]))
        if kind == "permuted_inputs":
            np.testing.assert_array_equal(np.sort(arr), np.arange(20))
        if kind == "shuffled_labels":
            np.testing.assert_array_equal(np.sort(arr), np.arange(10))
        if kind == "class_incremental":
            assert arr.shape == (2,) and len(set(arr.tolist())) == 2
    flat = [next(iter(d.values())).tolist() for d in draws]
    assert len({json.dumps(f) for f in flat}) == 5  # every task its own transform


def test_transforms_equal_numpy_indexing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4, 5)).astype(np.float32)
    y = rng.integers(0, 10, 7).astype(np.int32)
    perm = tasks_lib.Tasks(seq("permuted_inputs"), 10, (4, 5))
    tp = perm.params(jnp.int32(2))
    p = np.asarray(tp["perm"])
    np.testing.assert_array_equal(np.asarray(perm.inputs(jnp.asarray(x), tp)),
                                  x.reshape(7, 20)[:, p].reshape(7, 4, 5))
    lab = tasks_lib.Tasks(seq("shuffled_labels"), 10, (4, 5))
    tp = lab.params(jnp.int32(1))
    np.testing.assert_array_equal(np.asarray(lab.labels(jnp.asarray(y), tp)),
                                  np.asarray(tp["classes"])[y])
    noisy = tasks_lib.Tasks(seq("noisy_inputs", noise=0.5), 10, (4, 5))
    tp = noisy.params(jnp.int32(1))
    pattern = np.asarray(tp["pattern"])
    assert abs(pattern.std() - 0.5) < 0.5 * 0.6  # 20 draws of N(0, 0.5^2)
    np.testing.assert_allclose(np.asarray(noisy.inputs(jnp.asarray(x), tp)),
                               x + pattern.reshape(4, 5), rtol=0, atol=1e-6)
    fixed = tasks_lib.Tasks(TaskConfig(), 10, (4, 5))
    assert fixed.params(jnp.int32(3)) == {}
    np.testing.assert_array_equal(np.asarray(fixed.inputs(jnp.asarray(x), {})), x)


def test_class_incremental_batches_hold_only_the_tasks_classes():
    cfg = make_config(dataset={"name": "digits"},
                      task={"name": "continual", "kind": "class_incremental", "num_tasks": 3,
                            "steps_per_task": 10, "classes_per_task": 3})
    exp = experiment.build(cfg)
    d = experiment.device_data(exp)
    for t in range(3):
        tp = exp.tasks.params(jnp.int32(t))
        classes = set(np.asarray(tp["classes"]).tolist())
        _, yb = exp.tasks.draw(jax.random.PRNGKey(t), d, 256, tp)
        assert set(np.asarray(yb).tolist()) == classes  # 256 draws reach all 3 classes
        w = np.asarray(exp.tasks.weights(d["y_test"], tp))
        np.testing.assert_array_equal(w, np.isin(exp.dataset.y_test, list(classes)))


def test_cadence_puts_a_log_step_at_every_task_start_and_task_ends_after_each():
    calls = cadence.plan(steps=30, log_every=7, every={"eval": 0}, task_length=10, per_call=3)
    slots = [s for c in calls for s in c.slots]
    assert [s.step for s in slots] == [0, 7, 10, 14, 20, 21, 28, 30]
    assert [s.step for s in slots if s.on[cadence.TASK_END]] == [10, 20, 30]
    for s in slots:  # a slot's plain steps stay inside one task
        assert (s.step + s.n_plain) // 10 == s.step // 10 or s.n_plain == 0


# --------------------------------------------------------------------------- #
# Interventions


def relu_forward(params, x):
    """Hidden outputs of the 2-layer relu MLP (numpy, float64)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h0 = np.maximum(x @ p["in_kernel"] + p["in_bias"], 0)
    h1 = np.maximum(h0 @ p["hidden1_kernel"] + p["hidden1_bias"], 0)
    return [h0, h1]


def test_redo_resets_exactly_the_dormant_units_and_their_optimizer_moments():
    exp = plastic_exp("redo", every=5, tau=0.1)
    state = member0(exp)
    x = jnp.asarray(exp.dataset.x_train[:64])
    y = jnp.asarray(exp.dataset.y_train[:64])
    # units 1 and 4 of layer 0 never fire: a large negative bias
    off = state.params["in_bias"].at[jnp.array([1, 4])].set(-100.0)
    state = state.replace(params={**state.params, "in_bias": off})
    loss = step.loss_fn(exp.model, exp.head)
    state, _ = step.train_step(state, (x, y), None, model=exp.model, tx=exp.tx, loss_fn=loss)
    state, _ = step.train_step(state, (x, y), None, model=exp.model, tx=exp.tx, loss_fn=loss)
    hs = relu_forward(state.params, np.asarray(x, np.float64))
    expected = []
    for h in hs:
        a = np.abs(h).mean(0)
        expected.append(a <= 0.1 * a.mean())
    assert expected[0][[1, 4]].all()
    at = jnp.int32(10)  # due: a multiple of every
    before = state
    after = exp.plastic.before(state.replace(step=at), at, x)
    key = jax.random.fold_in(step_key(state.replace(step=at)), STREAM_PLASTICITY)
    fresh = jax.tree.map(np.asarray, exp.model.init(key, x[:1])[0])
    old = jax.tree.map(np.asarray, before.params)
    new = jax.tree.map(np.asarray, after.params)
    d0, d1 = expected

    def redrawn(got, want):  # a fresh draw inside the program: float32 rounding may differ
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)

    redrawn(new["in_kernel"][:, d0], fresh["in_kernel"][:, d0])
    np.testing.assert_array_equal(new["in_kernel"][:, ~d0], old["in_kernel"][:, ~d0])
    np.testing.assert_array_equal(new["in_bias"], np.where(d0, fresh["in_bias"], old["in_bias"]))
    k = old["hidden1_kernel"].copy()
    k[d0, :] = 0.0  # outgoing of layer 0's dormant units
    np.testing.assert_array_equal(new["hidden1_kernel"][:, ~d1], k[:, ~d1])
    redrawn(new["hidden1_kernel"][~d0][:, d1], fresh["hidden1_kernel"][~d0][:, d1])
    np.testing.assert_array_equal(new["hidden1_kernel"][d0], 0.0)
    out = old["out_kernel"].copy()
    out[d1, :] = 0.0
    np.testing.assert_array_equal(new["out_kernel"], out)
    np.testing.assert_array_equal(new["out_bias"], old["out_bias"])
    # Adam's mu and nu: zero exactly where a weight was re-initialised or zeroed
    touched = {"in_kernel": np.broadcast_to(d0, old["in_kernel"].shape),
               "in_bias": d0, "hidden1_bias": d1, "out_bias": np.zeros(2, bool),
               "hidden1_kernel": d0[:, None] | d1[None, :],
               "out_kernel": np.broadcast_to(d1[:, None], old["out_kernel"].shape)}
    adam_old, adam_new = before.opt_state[0], after.opt_state[0]
    for moment in ("mu", "nu"):
        for name, t in touched.items():
            m_old = np.asarray(getattr(adam_old, moment)[name])
            m_new = np.asarray(getattr(adam_new, moment)[name])
            np.testing.assert_array_equal(m_new, np.where(t, 0.0, m_old))
    # not due: nothing changes
    same = exp.plastic.before(state.replace(step=jnp.int32(11)), jnp.int32(11), x)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(state.replace(step=jnp.int32(11))),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cbp_utility_over_two_steps_equals_a_hand_computation():
    eta = 0.9
    exp = plastic_exp("cbp", decay_rate=eta, maturity=1000)
    state = member0(exp)
    plastic = exp.plastic
    loss = step.loss_fn(exp.model, exp.head, capture=True)
    util = [np.zeros(6), np.zeros(6)]
    rng = np.random.default_rng(1)
    for _ in range(2):
        idx = rng.integers(0, len(exp.dataset.x_train), 32)
        x, y = exp.dataset.x_train[idx], exp.dataset.y_train[idx]
        hs = relu_forward(state.params, x.astype(np.float64))  # before the update
        state, _ = step.train_step(state, (jnp.asarray(x), jnp.asarray(y)), None,
                                   model=exp.model, tx=exp.tx, loss_fn=loss, plastic=plastic)
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params)  # after it
        w_out = [np.abs(p["hidden1_kernel"]).sum(1), np.abs(p["out_kernel"]).sum(1)]
        for l in range(2):
            util[l] = eta * util[l] + (1 - eta) * np.abs(hs[l]).mean(0) * w_out[l]
    for l in range(2):
        np.testing.assert_allclose(np.asarray(state.extra["plastic"]["util"][l]), util[l],
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(state.extra["plastic"]["age"][l]), 2)


def test_cbp_replaces_the_mature_unit_of_least_utility():
    # rho = 1 / U with every unit mature: exactly one unit per layer per step
    exp = plastic_exp("cbp", decay_rate=0.5, maturity=0, replacement_rate=1 / 6)
    state = member0(exp)
    loss = step.loss_fn(exp.model, exp.head, capture=True)
    x = jnp.asarray(exp.dataset.x_train[:32])
    y = jnp.asarray(exp.dataset.y_train[:32])
    hs = relu_forward(state.params, np.asarray(x, np.float64))
    new, _ = step.train_step(state, (x, y), None, model=exp.model, tx=exp.tx, loss_fn=loss,
                             plastic=exp.plastic)
    stepped, _ = step.train_step(state, (x, y), None, model=exp.model, tx=exp.tx,
                                 loss_fn=step.loss_fn(exp.model, exp.head))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), stepped.params)
    w_out = [np.abs(p["hidden1_kernel"]).sum(1), np.abs(p["out_kernel"]).sum(1)]
    for l in range(2):
        u = 0.5 * np.abs(hs[l]).mean(0) * w_out[l] / (1 - 0.5)  # bias-corrected, age 1
        worst = int(np.argmin(u))
        age = np.asarray(new.extra["plastic"]["age"][l])
        assert age[worst] == 0 and (np.delete(age, worst) == 1).all()
    out_rows = np.asarray(new.params["out_kernel"])
    worst1 = int(np.argmin(0.5 * np.abs(hs[1]).mean(0) * w_out[1]))
    np.testing.assert_array_equal(out_rows[worst1], 0.0)
    np.testing.assert_array_equal(np.delete(out_rows, worst1, 0),
                                  np.delete(np.asarray(stepped.params["out_kernel"]), worst1, 0))


def test_shrink_perturb_follows_its_formula():
    exp = plastic_exp("shrink_perturb", every=4, shrink=0.3, perturb=0.05)
    state = member0(exp).replace(step=jnp.int32(8))
    x = jnp.asarray(exp.dataset.x_train[:8])
    after = exp.plastic.before(state, jnp.int32(8), x)
    key = jax.random.fold_in(step_key(state), STREAM_PLASTICITY)
    fresh = exp.model.init(key, x[:1])[0]
    for name in state.params:
        np.testing.assert_allclose(np.asarray(after.params[name]),
                                   0.3 * np.asarray(state.params[name])
                                   + 0.05 * np.asarray(fresh[name]), rtol=1e-6, atol=1e-7)


def test_l2_init_pulls_towards_the_initial_weights():
    lam, lr = 0.05, 0.1
    cfg = make_config(model={"depth": 2, "width": 6}, optimizer={"name": "sgd", "lr": lr},
                      plasticity={"method": "l2_init", "l2": lam})
    exp = experiment.build(cfg)
    s0 = member0(exp)
    x, y = jnp.asarray(exp.dataset.x_train[:16]), jnp.asarray(exp.dataset.y_train[:16])
    loss = step.loss_fn(exp.model, exp.head)
    kw = {"model": exp.model, "tx": exp.tx, "loss_fn": loss}
    s1, _ = step.train_step(s0, (x, y), None, plastic=exp.plastic, **kw)
    with_l2, _ = step.train_step(s1, (x, y), None, plastic=exp.plastic, **kw)
    without, _ = step.train_step(s1, (x, y), None, **kw)
    for name in s0.params:
        pull = -lr * 2 * lam * (np.asarray(s1.params[name], np.float64)
                                - np.asarray(s0.params[name], np.float64))
        got = np.asarray(with_l2.params[name], np.float64) - np.asarray(without.params[name])
        np.testing.assert_allclose(got, pull, rtol=1e-4, atol=1e-7)


def test_interventions_need_a_dense_model_and_periodic_ones_a_period():
    with pytest.raises(Exception, match="needs model=mlp"):
        experiment.build(make_config(model={"name": "cnn"}, dataset={"name": "digits"},
                                     plasticity={"method": "redo"}))
    with pytest.raises(ConfigError, match="plasticity.every=0"):
        make_config(plasticity={"method": "shrink_perturb", "every": 0})


# --------------------------------------------------------------------------- #
# A sequence end to end


SEQ = {"task": {"name": "continual", "kind": "permuted_inputs", "num_tasks": 4,
                "steps_per_task": 12, "seed": 1},
       "dataset": {"name": "mnist1d"}, "optimizer": {"name": "adam", "lr": 3e-3},
       "train": {"log_every": 6, "eval_every": 0, "seeds": 2, "batch_size": 32,
                 "probe_size": 64}}


def test_a_sequence_records_its_tasks_task_ends_and_summary(tmp_path):
    summary = driver.run(make_config(**SEQ), tmp_path)
    assert summary["config"]["train"]["steps"] == 48  # num_tasks x steps_per_task
    recs = read_records(tmp_path)
    for r in recs:
        assert r["task"] == min(r["step"] // 12, 3)
    ends = [r for r in recs if r.get("task_end/acc") is not None]
    assert sorted({r["step"] for r in ends}) == [12, 24, 36, 48]
    for r in ends:
        assert r["task_end/task"] == r["step"] // 12 - 1
        if r["step"] == 12:  # the finished task is the first
            assert r["task_end/first_acc"] == r["task_end/acc"]
    for s in summary["seeds"]:
        mine = sorted((r for r in ends if r["seed"] == s["seed"]), key=lambda r: r["step"])
        accs = [r["task_end/acc"] for r in mine]
        assert s["task_acc"] == accs and len(accs) == 4
        assert s["task_first_acc"] == [r["task_end/first_acc"] for r in mine]
        assert s["task_acc_last10"] == pytest.approx(accs[-1])  # 10% of 4 tasks: the last
        t = np.arange(4.0)
        slope = np.sum((t - t.mean()) * (np.asarray(accs) - np.mean(accs))) / np.sum(
            (t - t.mean()) ** 2)
        assert s["task_acc_slope"] == pytest.approx(slope, abs=1e-9)
    # drift: zero at each task's first step, the change in preact_mean since then otherwise
    first = {}
    for r in sorted(recs, key=lambda r: (r["seed"], r["step"])):
        key = (r["seed"], r["step"] // 12)
        if r["step"] % 12 == 0 and r["step"] < 48:
            first[key] = r["preact_mean/0"]
            assert r["preact_mean_drift/0"] == 0.0
        elif r["step"] < 48:
            assert r["preact_mean_drift/0"] == pytest.approx(r["preact_mean/0"] - first[key],
                                                             abs=1e-6)


class Interrupted(Exception):
    pass


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_a_sequence_interrupted_mid_task_resumes_bitwise(tmp_path, monkeypatch):
    sections = {**SEQ, "train": {**SEQ["train"], "checkpoint_every": 6,
                                 "log_steps_per_call": 1},
                "plasticity": {"method": "cbp", "maturity": 3, "replacement_rate": 0.05}}
    cfg = make_config(**sections)
    driver.run(cfg, tmp_path / "whole")
    make = loop.make_program

    def interrupting(*a, **kw):  # the 5th program call raises (mid-task: step 30)
        lower = make(*a, **kw).lower
        calls = []

        def compiled(*la, **lk):
            fn = lower(*la, **lk).compile()

            def call(*ca):
                calls.append(None)
                if len(calls) > 5:
                    raise Interrupted
                return fn(*ca)
            return call
        return types.SimpleNamespace(lower=lambda *la, **lk: types.SimpleNamespace(
            compile=lambda: compiled(*la, **lk)))

    monkeypatch.setattr(loop, "make_program", interrupting)
    with pytest.raises(Interrupted):
        driver.run(cfg, tmp_path / "cut")
    monkeypatch.setattr(loop, "make_program", make)
    resumed = driver.run(cfg, tmp_path / "cut")
    assert resumed["resumed_from"] == 30

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in rs]

    assert strip(read_records(tmp_path / "cut")) == strip(read_records(tmp_path / "whole"))


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_reduced_study_relu_loses_plasticity_on_permuted_digits_crelu_keeps_it(tmp_path):
    # experiments/plasticity at a large Adam rate: 20 tasks of 150 steps, 2 seeds
    from test_studies import study

    out = {}
    for act in ("relu", "crelu"):
        cfg = study("plasticity", f"activation={act}", "dataset=digits", "task.num_tasks=20",
                    "task.steps_per_task=150", "train.seeds=2",
                    "train.vmap.optimizer.lr=[0.02]", "train.log_every=150",
                    "train.probe_size=256")
        out[act] = (driver.run(cfg, tmp_path / act), read_records(tmp_path / act))
    summary, recs = out["relu"]
    for m in summary["seeds"]:
        assert np.mean(m["task_acc"][:2]) > 0.6  # it learns the first tasks
        assert m["task_acc_last10"] < 0.3  # and no longer learns the late ones (chance: 0.1)

    def layer_mean(r, key):
        return np.mean([r[f"{key}/{l}"] for l in range(3)])

    first = [r for r in recs if r["step"] == 0]
    last = [r for r in recs if r["step"] == 3000]
    assert np.mean([layer_mean(r, "dormant_frac") for r in last]) > 0.3 + np.mean(
        [layer_mean(r, "dormant_frac") for r in first])
    assert np.mean([layer_mean(r, "erank") for r in last]) < 0.6 * np.mean(
        [layer_mean(r, "erank") for r in first])
    for m in out["crelu"][0]["seeds"]:
        assert m["task_acc_last10"] > 0.8


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_the_report_draws_each_tasks_accuracy_from_the_records(tmp_path):
    from actlab import analysis
    from actlab.analysis import report
    from actlab.analysis.plots import tasks as plots_tasks

    cfg = make_config(**{**SEQ, "task": {**SEQ["task"], "num_tasks": 3, "steps_per_task": 6}})
    driver.run(cfg, tmp_path)
    fig = plots_tasks.task_accuracy(analysis.load_run(tmp_path))
    solid = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "-" and len(ln.get_xdata())]
    ends = [r for r in read_records(tmp_path) if r.get("task_end/acc") is not None]
    want = [np.mean([r["task_end/acc"] for r in ends if r["task_end/task"] == t])
            for t in range(3)]
    assert len(solid) == 1
    np.testing.assert_array_equal(solid[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(solid[0].get_ydata(), want, rtol=1e-12)
    html = report.build(tmp_path, replay=False).read_text()
    assert "task_accuracy.png" in html
