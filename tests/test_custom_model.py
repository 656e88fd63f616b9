"""model=custom: a linen module that actlab did not build, its layers discovered.

References: the built-in conv net through its own labels and captures (every metric of one
instrumented step equal), jax.grad of a plain linen MLP's loss with each Dense subtree's
norm taken here, its pre-activations from linen's capture_intermediates, and dead_frac of
its relu site recomputed in numpy.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from actlab import data
from actlab.engine import experiment
from actlab.errors import UserError
from actlab.models import ModelError
from conftest import make_config, measured_step

BATCH, PROBE = 16, 32


def one_step(exp, params, model_state):
    """One instrumented SGD step of a member with the given parameters; its measurement."""
    state = jax.tree.map(lambda a: a[0], experiment.initial_state(exp))
    state = state.replace(params=params, model_state=model_state,
                          opt_state=exp.tx.init(params))
    ds = exp.dataset
    x, y = jnp.asarray(ds.x_train[:BATCH]), jnp.asarray(ds.y_train[:BATCH])
    xp, yp = jnp.asarray(ds.x_train[:PROBE]), jnp.asarray(ds.y_train[:PROBE])

    m = measured_step(exp, state, (x, y), (xp, yp))
    return jax.tree.map(np.asarray, m), (x, y, xp)


def custom(target, **model):
    return make_config(model={"name": "custom", "target": target, **model},
                       dataset={"name": "digits"}, optimizer={"name": "sgd", "lr": 0.1},
                       train={"batch_size": BATCH, "probe_size": PROBE})


def test_builtin_cnn_as_a_custom_model_measures_the_same():
    acts = ("relu", "tanh")
    kw = {"depth": 2, "channels": 4}
    builtin = experiment.build(make_config(
        model={"name": "cnn", "activations": list(acts), **kw}, dataset={"name": "digits"},
        optimizer={"name": "sgd", "lr": 0.1}, train={"batch_size": BATCH,
                                                     "probe_size": PROBE}))
    watched = experiment.build(custom("custom_clients:builtin",
                                      kwargs={"name": "cnn", "activations_": list(acts), **kw},
                                      sites={"*layer0": "relu", "*layer1": "tanh"}))
    assert watched.model.layer_names == ("inner/layer0", "inner/layer1")
    p = jax.tree.map(lambda a: a[0], experiment.initial_state(builtin).params)
    ref, _ = one_step(builtin, p, {})
    got, _ = one_step(watched, {"inner": {"inner": p}}, {})
    # the same program up to the wrapper, so float32 agrees to a few ulps of each value
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-7, err_msg=k)


def test_builtin_mlp_and_its_linen_twin_as_a_custom_model_measure_the_same():
    """The built-in MLP keeps its layers as raw (stacked, scanned) parameters of one module,
    so it has no per-layer submodules to discover; its twin written with nn.Dense
    (actlab.models.clients:linen_mlp), given the same weights, measures the same on every
    metric."""
    acts = ["relu"] * 3  # the twin calls nn.relu after every hidden Dense: found, not named
    builtin = experiment.build(make_config(
        model={"name": "mlp", "depth": 3, "width": 8, "activations": acts,
               "scan_layers": False}, dataset={"name": "digits"},
        optimizer={"name": "sgd", "lr": 0.1}, train={"batch_size": BATCH, "probe_size": PROBE}))
    twin = experiment.build(custom("actlab.models.clients:linen_mlp",
                                   kwargs={"depth": 3, "width": 8}))
    assert [sp.name for sp in twin.model.specs] == acts
    p = jax.tree.map(lambda a: a[0], experiment.initial_state(builtin).params)
    names = ["in", "hidden1", "hidden2", "out"]
    inner = {f"Dense_{i}": {"kernel": p[f"{n}_kernel"], "bias": p[f"{n}_bias"]}
             for i, n in enumerate(names)}
    ref, _ = one_step(builtin, p, {})
    got, _ = one_step(twin, {"inner": inner}, {})
    assert set(ref) <= set(got)
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=2e-5, atol=1e-7, err_msg=k)


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_builtin_transformer_as_a_custom_model_measures_its_ffn_sites_the_same():
    """Discovery finds every projection (embedding, q/k/v/out, both FFN Dense) and the relu
    after each FFN up-projection; those layers' activation metrics equal the built-in
    path's, which measures exactly those sites."""
    kw = {"depth": 3}
    builtin = experiment.build(make_config(
        model={"name": "transformer", "activations": ["relu"] * 3, **kw},
        dataset={"name": "digits"}, optimizer={"name": "sgd", "lr": 0.1},
        train={"batch_size": BATCH, "probe_size": PROBE}))
    watched = experiment.build(custom("custom_clients:builtin",
                                      kwargs={"name": "transformer",
                                              "activations_": ["relu"] * 3, **kw}))
    names = watched.model.layer_names
    sites = [i for i, sp in enumerate(watched.model.specs) if sp.name == "relu"]
    assert [names[i] for i in sites] == [f"inner/layer{l}" for l in range(builtin.model.num_layers)]
    assert all(watched.model.specs[i].name == "identity" for i in range(len(names))
               if i not in sites)  # attention's 1/sqrt(d) scaling is no nonlinearity
    p = jax.tree.map(lambda a: a[0], experiment.initial_state(builtin).params)
    ref, _ = one_step(builtin, p, {})
    got, _ = one_step(watched, {"inner": {"inner": p}}, {})
    for k in ("act_mean", "act_std", "dead_frac", "q", "c", "preact_mean", "delta_norm"):
        for l, i in enumerate(sites):
            np.testing.assert_allclose(got[k][i], ref[k][l], rtol=1e-5, atol=1e-7,
                                       err_msg=f"{k}/{l}")
    for k in ("grad_norm/out", "train/loss"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, err_msg=k)


def test_plain_linen_mlp_against_jax_grad_and_capture_intermediates():
    exp = experiment.build(custom("custom_clients:mlp", kwargs={"width": 12},
                                  sites={"Dense_0": "relu", "Dense_1": "tanh"}))
    assert exp.model.layer_names == ("Dense_0", "Dense_1")
    inner = jax.tree.map(lambda a: a[0], experiment.initial_state(exp).params)["inner"]
    inner["Dense_0"]["bias"] = inner["Dense_0"]["bias"].at[:4].set(-50.0)  # 4 dead units
    m, (x, y, xp) = one_step(exp, {"inner": inner}, {})
    from custom_clients import PlainMLP

    plain = PlainMLP(width=12, num_classes=10)

    def loss(p):
        logits = plain.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(inner)
    for l, name in enumerate(("Dense_0", "Dense_1")):
        ref = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                          for g in jax.tree.leaves(grads[name])))
        assert m["grad_norm"][l] == pytest.approx(ref, rel=1e-5)
    ref_out = np.sqrt(sum(np.sum(np.square(np.asarray(g, np.float64)))
                          for g in jax.tree.leaves(grads["Dense_2"])))
    assert m["grad_norm/out"] == pytest.approx(ref_out, rel=1e-5)
    _, inter = plain.apply({"params": inner}, xp, capture_intermediates=True)
    z0 = np.asarray(inter["intermediates"]["Dense_0"]["__call__"][0], np.float64)
    z1 = np.asarray(inter["intermediates"]["Dense_1"]["__call__"][0], np.float64)
    assert m["act_mean"][0] == pytest.approx(np.maximum(z0, 0).mean(), rel=1e-5)
    assert m["act_std"][1] == pytest.approx(np.tanh(z1).std(), rel=1e-4)
    assert m["q"][1] == pytest.approx(np.mean(np.sum(z1 ** 2, -1) / z1.shape[-1]), rel=1e-5)
    dead = np.mean(np.all(z0 <= 0, axis=0))  # relu: phi' = 0 on every probe example
    assert dead >= 4 / 12 and m["dead_frac"][0] == pytest.approx(dead, abs=1e-7)
    assert m["dead_frac"][1] == 0.0  # tanh cannot die


@pytest.mark.parametrize("target, message", [
    ("no_such_package.mod:make", "cannot import 'no_such_package.mod'"),
    ("custom_clients:missing", "has no callable 'missing'"),
    ("custom_clients", "must be 'package.module:factory'"),
    ("custom_clients:not_a_module", "not a flax.linen or nnx Module"),
    ("custom_clients:wrong_classes", "[11] per example; the dataset has 10 classes"),
])
def test_bad_factories_are_refused_in_one_line(target, message):
    with pytest.raises((ModelError, Exception)) as e:
        experiment.build(custom(target), dataset=data.load("digits"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_site_pattern_that_matches_no_layer_lists_the_layers():
    with pytest.raises(ModelError) as e:
        experiment.build(custom("custom_clients:mlp", sites={"Dense_9": "relu"}))
    assert "Dense_0, Dense_1" in str(e.value)


def test_cli_refuses_a_factory_that_does_not_fit_with_exit_code_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "HYDRA_FULL_ERROR": "0"}
    p = subprocess.run(["actlab-train", "model=custom", "model.target=custom_clients:wrong_classes",
                        "dataset=digits", f"hydra.run.dir={tmp_path}"], capture_output=True,
                       text=True, timeout=300, env=env)
    err = p.stderr.strip()
    assert p.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "its output for inputs [B, 8, 8, 1] is [11] per example" in err


def test_sites_as_a_list_of_pattern_strings_as_the_command_line_gives_them():
    as_list = experiment.build(custom("custom_clients:mlp",
                                      sites=["Dense_0=relu", "Dense_*=tanh"]))
    assert [sp.name for sp in as_list.specs] == ["relu", "tanh"]  # the first match wins
    with pytest.raises(UserError, match="model.sites must map patterns"):
        experiment.build(custom("custom_clients:mlp", sites=["Dense_0"]))


def test_sites_found_in_the_traced_program_without_naming_them():
    """relu and tanh called as functions are found and measured as if named."""
    exp = experiment.build(custom("custom_clients:mlp", kwargs={"width": 12}))
    assert [sp.name for sp in exp.model.specs] == ["relu", "tanh"]
    inner = jax.tree.map(lambda a: a[0], experiment.initial_state(exp).params)["inner"]
    inner["Dense_0"]["bias"] = inner["Dense_0"]["bias"].at[:5].set(-50.0)  # 5 dead units
    m, (x, y, xp) = one_step(exp, {"inner": inner}, {})
    w, b = (np.asarray(inner["Dense_0"][k], np.float64) for k in ("kernel", "bias"))
    z0 = np.asarray(xp, np.float64).reshape(len(xp), -1) @ w + b
    dead = np.mean(np.all(z0 <= 0, axis=0))
    assert dead >= 5 / 12 and m["dead_frac"][0] == pytest.approx(dead, abs=1e-7)
    assert m["act_mean"][0] == pytest.approx(np.maximum(z0, 0).mean(), rel=1e-5)


def test_a_written_out_function_matches_the_registry_and_an_unknown_one_is_its_own_site():
    from actlab import activations

    exp = experiment.build(custom("custom_clients:functions_mlp"))
    mish, clip, soft = exp.model.specs
    assert mish.name == "mish" and soft.name == "identity"  # softmax is not elementwise
    assert clip.name.startswith("traced_") and clip.info.can_die
    t = np.linspace(-5, 5, 101, dtype=np.float32) + 0.05  # off the kinks at 0 and 3
    np.testing.assert_allclose(np.asarray(clip(jnp.asarray(t))), np.clip(t, 0, 3), atol=0)
    # phi' is exactly zero off [0, 3]: the generic rule's dead units are those whose
    # pre-activation stays there on every probe example (the flat sides are not saturation)
    assert clip.saturation() is None
    np.testing.assert_array_equal(np.asarray(clip.derivative(jnp.asarray(t))),
                                  ((t > 0) & (t < 3)).astype(np.float32))
    assert clip.name in activations.names()
    p = jax.tree.map(lambda a: a[0], experiment.initial_state(exp).params)
    m, (x, y, xp) = one_step(exp, p, {})
    inner = p["inner"]
    h = np.asarray(xp, np.float64).reshape(len(xp), -1)
    for name, fn in (("Dense_0", lambda z: z * np.tanh(np.logaddexp(z, 0))),
                     ("Dense_1", None)):
        z = h @ np.asarray(inner[name]["kernel"], np.float64) + np.asarray(
            inner[name]["bias"], np.float64)
        if fn is None:
            dead = np.mean(np.all((z <= 0) | (z >= 3), axis=0))
            assert m["dead_frac"][1] == pytest.approx(dead, abs=1e-7)
            assert m["act_mean"][1] == pytest.approx(np.clip(z, 0, 3).mean(), rel=1e-5)
        else:
            assert m["act_mean"][0] == pytest.approx(fn(z).mean(), rel=1e-5)
            h = fn(z)
