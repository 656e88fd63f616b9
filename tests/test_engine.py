"""The training engine: vmapped members, known phenomena, divergence, learnable activations."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from actlab import activations, models
from actlab.engine import experiment
from actlab.engine import loop as program
from actlab.runs import driver as train
from actlab.runs import retrain
from conftest import make_config


def records(run_dir):
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def test_vmapped_member_matches_a_separate_run_with_its_seed(tmp_path):
    together = train.run(make_config(train={"seeds": 3, "seed": 0}), tmp_path / "a")
    alone = train.run(make_config(train={"seeds": 1, "seed": 2}), tmp_path / "b")
    ra = [r for r in records(tmp_path / "a") if r["seed"] == 2]
    rb = records(tmp_path / "b")
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [0, 5, 10, 15, 20]
    for x, y in zip(ra, rb, strict=True):
        assert set(x) == set(y)
        for k in x:
            if k != "wall_time" and x[k] is not None:
                assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), k
    assert [s["seed"] for s in together["seeds"]] == [0, 1, 2]
    assert together["seeds"][2]["final_eval_acc"] == pytest.approx(
        alone["seeds"][0]["final_eval_acc"])


@pytest.mark.parametrize("model", [{"name": "cnn", "depth": 2, "channels": 4},
                                   {"name": "transformer", "depth": 1, "dim": 8, "heads": 2}])
def test_members_mapped_or_vmapped_give_the_same_numbers(tmp_path, model):
    def run(loop):
        cfg = make_config(model=model, dataset={"name": "mnist1d", "num_samples": 300,
                                                "view": "sequence"},
                          train={"seeds": 2, "member_loop": loop})
        assert program.member_loop(experiment.build(cfg)) == loop
        train.run(cfg, tmp_path / loop)
        return records(tmp_path / loop)

    mapped, vmapped = run("map"), run("vmap")
    assert len(mapped) == len(vmapped) == 10
    for x, y in zip(mapped, vmapped, strict=True):
        assert (x["step"], x["seed"]) == (y["step"], y["seed"])
        assert x.keys() == y.keys()
        if x["step"] == 0:
            # the same parameters measured by two programs: only float32 reassociation of
            # their sums differs (relative ~ sqrt(terms) x 6e-8, far below 1e-4)
            for k in x:
                if k != "wall_time" and x[k] is not None:
                    assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), k
        else:
            # afterwards Adam amplifies those differences step by step (to ~1e-3 relative
            # in gradient norms after 20 steps on some CPUs): the losses still agree
            assert x["train/loss"] == pytest.approx(y["train/loss"], rel=2e-2), x["step"]


def first_record(tmp_path, act, init):
    cfg = make_config(activation={"name": act}, init={"name": init},
                      model={"depth": 10, "width": 64},
                      train={"steps": 1, "log_every": 1, "eval_every": 1, "batch_size": 64})
    train.run(cfg, tmp_path / f"{act}-{init}")
    return records(tmp_path / f"{act}-{init}")[0]


def test_vanishing_gradients_sigmoid_vs_relu(tmp_path):
    s = first_record(tmp_path, "sigmoid", "glorot")
    r = first_record(tmp_path, "relu", "he")
    # sigmoid: phi' <= 1/4 per layer, the backward signal shrinks by orders of magnitude
    assert s["delta_norm/0"] / s["delta_norm/9"] < 1e-3
    assert s["grad_norm/1"] / s["grad_norm/9"] < 1e-2
    # relu with He init keeps it near constant through depth
    assert 0.2 < r["delta_norm/0"] / r["delta_norm/9"] < 5
    assert 0.2 < r["grad_norm/1"] / r["grad_norm/9"] < 5


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_relu_with_huge_learning_rate_dies_leaky_does_not(tmp_path):
    def final_dead(act, lr):
        cfg = make_config(activation={"name": act}, model={"depth": 4, "width": 32},
                          optimizer={"name": "sgd", "lr": lr},
                          train={"steps": 100, "log_every": 50, "eval_every": 50, "seeds": 4})
        d = tmp_path / f"{act}-{lr}"
        train.run(cfg, d)
        last = [r for r in records(d) if r["step"] == 100]  # members that did not diverge
        assert last
        return np.mean([r[f"dead_frac/{l}"] for r in last for l in range(4)])

    assert final_dead("relu", 1.0) > final_dead("relu", 0.01) + 0.1
    assert final_dead("leaky_relu", 1.0) == 0.0


def test_divergence_is_recorded_and_never_crashes(tmp_path):
    cfg = make_config(optimizer={"name": "sgd", "lr": 1e12}, train={"seeds": 2})
    s = train.run(cfg, tmp_path)
    assert s["status"] == "diverged"
    assert all(m["diverged_at"] is not None and m["diverged_at"] < 20 for m in s["seeds"])
    recs = records(tmp_path)
    for m in s["seeds"]:  # no records after the member stopped
        assert all(r["step"] <= m["diverged_at"] for r in recs if r["seed"] == m["seed"])
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "diverged"


def test_some_members_diverge_the_others_finish(tmp_path):
    cfg = make_config(activation={"name": "leaky_relu"}, model={"depth": 4, "width": 32},
                      optimizer={"name": "sgd", "lr": 2.0},
                      train={"steps": 100, "log_every": 50, "eval_every": 50, "seeds": 4})
    s = train.run(cfg, tmp_path)
    diverged = [m for m in s["seeds"] if m["diverged_at"] is not None]
    assert 0 < len(diverged) < 4
    assert s["status"] == "completed"
    steps = {m["seed"]: max(r["step"] for r in records(tmp_path) if r["seed"] == m["seed"])
             for m in s["seeds"]}
    for m in s["seeds"]:
        assert steps[m["seed"]] == (100 if m["diverged_at"] is None else
                                    max(r for r in (0, 50) if r <= m["diverged_at"]))
    # a diverged member's parameters stay exactly where its loss first went non-finite,
    # while the members that did not diverge keep moving
    at = sorted({m["diverged_at"] for m in diverged})
    _, snaps = retrain.retrain(cfg, [*at, 99, 100])
    for i, m in enumerate(s["seeds"]):
        start = snaps[m["diverged_at"]] if m["diverged_at"] is not None else snaps[99]
        pairs = zip(jax.tree.leaves(start["params"]), jax.tree.leaves(snaps[100]["params"]),
                    strict=True)
        same = all(np.array_equal(np.asarray(a)[i], np.asarray(b)[i], equal_nan=True)
                   for a, b in pairs)
        assert same == (m["diverged_at"] is not None), m


@pytest.mark.parametrize("act,params,key", [("prelu", {}, "prelu_alpha"),
                                            ("swish", {"learnable": True}, "swish_beta")])
def test_learnable_activation_parameters_train_and_are_logged(tmp_path, act, params, key):
    cfg = make_config(activation={"name": act, **params}, model={"depth": 3, "width": 16},
                      train={"steps": 60, "log_every": 20, "eval_every": 20})
    train.run(cfg, tmp_path)
    recs = records(tmp_path)
    first, last = recs[0], recs[-1]
    init = 0.25 if act == "prelu" else 1.0
    for l in range(3):
        assert first[f"{key}/{l}"] == pytest.approx(init)
        assert abs(last[f"{key}/{l}"] - init) > 1e-4


def test_per_layer_activation_list(tmp_path):
    cfg = make_config(model={"depth": 3, "width": 8, "activations": ["tanh", "relu", "prelu"]})
    s = train.run(cfg, tmp_path)
    assert s["status"] == "completed"
    r = records(tmp_path)[0]
    # tanh never dies; the relu layer reports dead units measured with relu's phi'
    assert r["dead_frac/0"] == 0.0 and "prelu_alpha/2" in r and "prelu_alpha/0" not in r


def test_scan_over_layers_equals_unrolled():
    sp = (activations.spec("gelu"),) * 6
    kw = dict(specs=sp, num_classes=3, input_shape=(5,), depth=6, width=16)
    scanned = models.build("mlp", scan_layers=True, **kw)
    unrolled = models.build("mlp", scan_layers=False, **kw)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    y = jnp.arange(8) % 3
    ps, state = scanned.init(jax.random.PRNGKey(0), x)
    pu, _ = unrolled.init(jax.random.PRNGKey(0), x)

    def stack(p):  # the unrolled layers' own arrays, stacked as the scanned MLP holds them
        out = {k: v for k, v in p.items() if not k.startswith("hidden")}
        for kind in ("kernel", "bias"):
            out[f"hidden_{kind}"] = jnp.stack([p[f"hidden{l}_{kind}"] for l in range(1, 6)])
        return out

    # both layouts start from the same numbers
    for k, v in stack(pu).items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(ps[k]), err_msg=k)
    eps = jnp.zeros((6, 8, 16))

    def loss(m, p, e):
        logits, _, _ = m.apply(p, state, x, e)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y])

    ls, gs = jax.value_and_grad(lambda p, e: loss(scanned, p, e), argnums=(0, 1))(ps, eps)
    lu, gu = jax.value_and_grad(lambda p, e: loss(unrolled, p, e), argnums=(0, 1))(pu, eps)
    np.testing.assert_allclose(ls, lu, rtol=1e-6)
    gu = (stack(gu[0]), gu[1])
    for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gu), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    _, auxs, _ = scanned.apply(ps, state, x, capture=True)
    _, auxu, _ = unrolled.apply(pu, state, x, capture=True)
    for k in ("z", "h", "dphi"):
        assert auxs[k].shape == (6, 8, 16)
        np.testing.assert_allclose(auxs[k], auxu[k], rtol=1e-5, atol=1e-6)
    # per-layer norms read the labels of either layout
    np.testing.assert_allclose(scanned.layer_sqnorms(ps)[0], unrolled.layer_sqnorms(pu)[0],
                               rtol=1e-6)


def test_summary_convergence_fields(tmp_path):
    cfg = make_config(model={"depth": 3, "width": 32},
                      train={"steps": 400, "log_every": 20, "eval_every": 20,
                             "target": "train/loss<=0.5", "seeds": 2})
    s = train.run(cfg, tmp_path)
    recs = records(tmp_path)
    for m in s["seeds"]:
        mine = [r for r in recs if r["seed"] == m["seed"]]
        hit = [r for r in mine if r["train/loss"] <= 0.5]
        assert m["steps_to_target"] == hit[0]["step"]
        assert m["time_to_target"] == hit[0]["wall_time"]
        assert m["loss_auc"] == pytest.approx(np.mean([r["train/loss"] for r in mine]))
        evals = [r["eval/acc"] for r in mine if "eval/acc" in r]
        assert m["best_eval_acc"] == pytest.approx(max(evals))
        assert m["final_eval_acc"] == pytest.approx(evals[-1])
        assert m["time_to_target_excl_compile"] == pytest.approx(
            m["time_to_target"] - s["compile_seconds"], abs=1e-3)
    assert s["compile_seconds"] > 0
    agg = s["aggregate"]["final_eval_acc"]
    assert agg["n"] == 2
    lo, hi = agg["ci95"]
    assert lo <= agg["mean"] <= hi
    assert agg["mean"] == pytest.approx(np.mean([m["final_eval_acc"] for m in s["seeds"]]))


def test_vmapped_learning_rates_match_separate_runs(tmp_path):
    lrs = [0.003, 0.03]
    grid = train.run(make_config(train={"seeds": 2, "vmap": {"optimizer": {"lr": lrs}}}),
                     tmp_path / "grid")
    assert [(m["optimizer.lr"], m["seed"]) for m in grid["seeds"]] == [
        (0.003, 0), (0.003, 1), (0.03, 0), (0.03, 1)]
    together = records(tmp_path / "grid")
    for lr in lrs:
        alone = train.run(make_config(optimizer={"lr": lr}, train={"seeds": 1, "seed": 1}),
                          tmp_path / f"lr{lr}")
        mine = [r for r in together if r["optimizer.lr"] == lr and r["seed"] == 1]
        ref = records(tmp_path / f"lr{lr}")
        assert len(mine) == len(ref)
        for x, y in zip(mine, ref, strict=True):
            for k in ("train/loss", "grad_norm/0", "update_ratio/1", "dead_frac/1"):
                assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), (lr, k)
        assert alone["seeds"][0]["final_eval_acc"] == pytest.approx(
            [m for m in grid["seeds"] if m["optimizer.lr"] == lr and m["seed"] == 1][0][
                "final_eval_acc"])


def test_vmapped_init_gain_scales_the_hidden_kernels(tmp_path):
    cfg = make_config(model={"depth": 3, "width": 64},
                      train={"vmap": {"init": {"gain": [0.5, 2.0]}}, "steps": 1, "log_every": 1})
    train.run(cfg, tmp_path)
    r0, r1 = [r for r in records(tmp_path) if r["step"] == 0]
    assert (r0["init.gain"], r1["init.gain"]) == (0.5, 2.0)
    for l in range(3):
        assert r1[f"weight_norm/{l}"] / r0[f"weight_norm/{l}"] == pytest.approx(4.0, rel=1e-5)
    assert r1["weight_norm/out"] == pytest.approx(r0["weight_norm/out"], rel=1e-6)


def test_warmup_cosine_schedule_and_gradient_clipping(tmp_path):
    def first(name, **opt):
        cfg = make_config(optimizer={"name": "sgd", "lr": 0.1, **opt},
                          train={"steps": 20, "log_every": 1, "eval_every": 0})
        train.run(cfg, tmp_path / name)
        return records(tmp_path / name)

    const, sched = first("const"), first("sched", schedule="warmup_cosine", warmup_steps=10)
    # step 0: factor 1/10 of the constant run's update; step 19: cosine tail, 0.5(1+cos(pi*9/10))
    assert sched[0]["update_ratio/0"] == pytest.approx(const[0]["update_ratio/0"] / 10, rel=1e-4)
    factor = 0.5 * (1 + np.cos(np.pi * 9 / 10))
    r = sched[19]
    assert r["update_ratio/1"] * r["weight_norm/1"] == pytest.approx(
        factor * 0.1 * r["grad_norm/1"], rel=1e-3)
    clipped = first("clip", clip_norm=1e-3)[0]
    total = np.sqrt(sum((clipped[f"update_ratio/{l}"] * clipped[f"weight_norm/{l}"]) ** 2
                        for l in range(2)) + (clipped["update_ratio/out"]
                                              * clipped["weight_norm/out"]) ** 2)
    assert total == pytest.approx(0.1 * 1e-3, rel=1e-3)


def test_vmapped_leaky_slope_matches_separate_runs(tmp_path):
    slopes = [0.01, 0.3]
    grid = train.run(make_config(activation={"name": "leaky_relu"},
                                 train={"vmap": {"activation": {"alpha": slopes}}}),
                     tmp_path / "grid")
    assert [m["activation.alpha"] for m in grid["seeds"]] == slopes
    together = records(tmp_path / "grid")
    for a in slopes:
        train.run(make_config(activation={"name": "leaky_relu", "alpha": a}), tmp_path / f"{a}")
        mine = [r for r in together if r["activation.alpha"] == a]
        ref = records(tmp_path / f"{a}")
        assert len(mine) == len(ref) == 5
        for x, y in zip(mine, ref, strict=True):
            for k in ("train/loss", "grad_norm/0", "update_ratio/1", "delta_norm/0",
                      "act_mean/1", "eval/acc"):
                if k in y:
                    assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), (a, k)
        # held fixed, not trained
        assert all(r["leaky_relu_alpha/1"] == pytest.approx(a) for r in mine)


def test_vmapped_activation_parameter_errors():
    from actlab.config import ConfigError

    with pytest.raises(ConfigError, match="no numeric parameter 'beta'.*alpha"):
        make_config(activation={"name": "leaky_relu"},
                    train={"vmap": {"activation": {"beta": [1.0]}}})
    with pytest.raises(ConfigError, match="has no numeric parameter"):
        make_config(activation={"name": "relu"}, train={"vmap": {"activation": {"alpha": [1.0]}}})


def test_metric_selection_computes_only_what_is_asked(tmp_path):
    train.run(make_config(train={"metrics": ["grad_norm", "dead_frac"]}), tmp_path / "some")
    r = records(tmp_path / "some")[0]
    families = {k.split("/")[0] for k in r if "/" in k}
    assert families == {"grad_norm", "dead_frac", "train", "eval"}
    train.run(make_config(train={"metrics": "none"}), tmp_path / "none")
    r = records(tmp_path / "none")[1]
    assert {k.split("/")[0] for k in r if "/" in k} == {"train"}
    assert r["train/loss"] > 0
    from actlab.config import ConfigError
    with pytest.raises(ConfigError, match="unknown train.metrics 'grad'.*grad_norm"):
        make_config(train={"metrics": ["grad"]})


def test_probes_run_on_their_own_interval(tmp_path):
    cfg = make_config(probes={"hessian": {"every": 10}, "noise_scale": {"every": 15}})
    train.run(cfg, tmp_path)
    rs = records(tmp_path)
    with_h = [r["step"] for r in rs if "hessian/top_eig" in r]
    with_n = [r["step"] for r in rs if "noise_scale/b_simple" in r]
    assert with_h == [0, 10, 20] and with_n == [0, 15, 20]
    assert all(np.isfinite(r["hessian/top_eig"]) for r in rs if "hessian/top_eig" in r)
    plain = make_config()
    train.run(plain, tmp_path / "off")
    assert not any(k.startswith(("hessian", "noise_scale")) for r in records(tmp_path / "off")
                   for k in r)
