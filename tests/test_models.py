"""Models, heads, initialisations and datasets (the research axes beyond the MLP)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from actlab import activations, data, models
from actlab.config import ConfigError
from actlab.engine import experiment
from actlab.measure import metrics
from actlab.models import initializers as init
from actlab.runs import driver as train
from actlab.runs import retrain
from conftest import make_config


def n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def built(name, input_shape, num_classes, act="relu", n=None, **params):
    n = n or models.check(name, params)
    return models.build(name, specs=(activations.spec(act),) * n, num_classes=num_classes,
                        input_shape=input_shape, **params)


def test_parameter_counts_by_hand():
    mlp = built("mlp", (2,), 2, depth=2, width=3)
    p, _ = mlp.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
    assert n_params(p) == (2 * 3 + 3) + (3 * 3 + 3) + (3 * 2 + 2)
    cnn = built("cnn", (8, 8, 1), 10, depth=2, channels=4, kernel_size=3)
    p, _ = cnn.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 1)))
    assert n_params(p) == (9 * 1 * 4 + 4) + (9 * 4 * 4 + 4) + (4 * 10 + 10)
    rec = built("recommender", (2,), 1, n=2, n_factors=4, hidden=(8, 4), num_users=10,
                num_items=5)
    p, _ = rec.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
    assert n_params(p) == 10 * 4 + 5 * 4 + (8 * 8 + 8) + (8 * 4 + 4) + (4 + 1)
    res = built("resnet", (8, 8, 1), 10, blocks=3, channels=16)
    assert res.num_layers == 19  # ResNet-20: 19 activation layers + the classifier


@pytest.mark.parametrize("name,shape,params", [
    ("mlp", (2,), {"depth": 3, "width": 8, "norm": "batch", "dropout": 0.1, "residual": True}),
    ("mlp", (2,), {"depth": 3, "width": 8, "norm": "layer"}),
    ("cnn", (40, 1), {"depth": 2, "channels": 4}),
    ("cnn", (8, 8, 1), {"depth": 2, "channels": 4, "norm": "batch"}),
    ("resnet", (8, 8, 1), {"blocks": 1, "channels": 4}),
    ("resnet", (8, 8, 1), {"blocks": 1, "channels": 4, "preact": True}),
    ("transformer", (40, 1), {"depth": 2, "dim": 8, "heads": 2}),
    ("transformer", (8, 8, 1), {"depth": 1, "dim": 8, "heads": 2, "patch": 4}),
])
@pytest.mark.parametrize("act", ["relu", "tanh", "prelu"])
def test_forward_shapes_and_one_capture_per_layer(name, shape, params, act):
    m = built(name, shape, 10, act=act, **params)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, *shape))
    p, st = m.init(jax.random.PRNGKey(1), x)
    logits, aux, _ = m.apply(p, st, x, capture=True)
    assert logits.shape == (5, 10)
    z = aux["z"]
    n = len(z) if isinstance(z, list) else z.shape[0]
    assert n == m.num_layers
    sq, out = m.layer_sqnorms(p)
    assert sq.shape == (m.num_layers,) and np.all(np.asarray(sq) > 0) and float(out) > 0
    if act == "prelu":
        assert len(m.activation_params(p)) >= 1


def test_conv_channels_are_the_units_of_the_metrics():
    m = built("cnn", (12, 1), 3, depth=1, channels=6, pool="none")
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 12, 1))
    p, st = m.init(jax.random.PRNGKey(1), x)
    p = jax.tree.map(lambda a: a, p)
    bias = np.zeros(6, np.float32)
    bias[:2] = -1e3  # channels 0 and 1: z <= 0 at every position of every example
    p["layer0"]["bias"] = jnp.asarray(bias)
    _, aux, _ = m.apply(p, st, x, capture=True)
    z = np.asarray(aux["z"][0])  # [7, 12, 6]
    ref_dead = np.mean(np.all(z.reshape(-1, 6) <= 0, axis=0))
    got = metrics.activation_metrics(aux["z"], aux["h"], aux["dphi"], jnp.array([np.nan]),
                                     jnp.array([np.nan]), jnp.array([1.0]))
    assert ref_dead == pytest.approx(2 / 6)
    assert float(got["dead_frac"][0]) == pytest.approx(ref_dead)
    assert float(got["act_mean"][0]) == pytest.approx(np.maximum(z, 0).mean(), rel=1e-5)


def records(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model,dataset,mparams", [
    ("cnn", {"name": "mnist1d", "view": "sequence", "num_samples": 500},
     {"depth": 2, "channels": 4}),
    ("transformer", {"name": "digits"}, {"depth": 1, "dim": 8, "heads": 2}),
    ("resnet", {"name": "digits"}, {"blocks": 1, "channels": 4}),
    ("recommender", {"name": "ratings", "num_users": 30, "num_items": 20},
     {"hidden": [16, 8]}),
    ("mlp", {"name": "moons"}, {"depth": 2, "width": 8, "norm": "batch", "dropout": 0.2}),
])
def test_every_model_trains_with_per_layer_metrics(tmp_path, model, dataset, mparams):
    cfg = make_config(model={"name": model, **mparams}, dataset=dataset,
                      train={"steps": 4, "log_every": 2, "eval_every": 2})
    s = train.run(cfg, tmp_path)
    assert s["status"] == "completed"
    r = records(tmp_path)[-1]
    for l in range(cfg.model.num_layers):
        for key in ("grad_norm", "delta_norm", "dead_frac", "sat_frac", "act_std"):
            assert r[f"{key}/{l}"] is not None
    if model == "recommender":
        assert r["eval/rmse"] > 0 and r.get("eval/acc") is None


def test_one_vs_all_probabilities_need_not_sum_to_one(tmp_path):
    probs = {}
    for head in ("softmax", "one_vs_all"):
        cfg = make_config(model={"head": head}, dataset={"name": "digits", "flatten": True},
                          train={"steps": 30, "log_every": 10, "eval_every": 10})
        exp, snaps = retrain.retrain(cfg, [30])
        probs[head] = retrain.forward(exp, snaps[30], exp.dataset.x_test[:50])["probs"]
    np.testing.assert_allclose(probs["softmax"].sum(1), 1.0, rtol=1e-5)
    sums = probs["one_vs_all"].sum(1)
    assert np.all((probs["one_vs_all"] > 0) & (probs["one_vs_all"] < 1))
    assert np.max(np.abs(sums - 1)) > 0.05


@pytest.mark.parametrize("scheme,dist,var", [
    ("he", "normal", lambda fi, fo: 2 / fi), ("he", "uniform", lambda fi, fo: 2 / fi),
    ("glorot", "normal", lambda fi, fo: 2 / (fi + fo)),
    ("glorot", "uniform", lambda fi, fo: 2 / (fi + fo)), ("lecun", "normal", lambda fi, fo: 1 / fi),
])
def test_initialisation_variances(scheme, dist, var):
    fi, fo = 256, 128
    w = np.asarray(init.kernel_init(scheme, dist, gain=1.5)(jax.random.PRNGKey(0), (fi, fo)))
    assert w.var() == pytest.approx(1.5**2 * var(fi, fo), rel=0.05)
    stacked = np.asarray(init.kernel_init(scheme, dist, stacked=True)(jax.random.PRNGKey(0),
                                                                      (3, fi, fo)))
    assert stacked[1].var() == pytest.approx(var(fi, fo), rel=0.05)


def test_orthogonal_init_per_layer():
    w = np.asarray(init.kernel_init("orthogonal", gain=2.0, stacked=True)(
        jax.random.PRNGKey(0), (3, 16, 16)))
    for layer in w:
        np.testing.assert_allclose(layer.T @ layer, 4 * np.eye(16), atol=1e-4)


def test_offline_datasets_have_the_common_form():
    for name, kw in [("moons", {}), ("digits", {}), ("ratings", {}),
                     ("mnist1d", {"num_samples": 500, "view": "sequence"})]:
        ds = data.load(name, **kw)
        assert ds.x_train.dtype == np.float32 and len(ds.x_train) == len(ds.y_train)
        assert ds.x_test.shape[1:] == ds.x_train.shape[1:]
    assert data.load("digits").input_shape == (8, 8, 1)
    assert data.load("mnist1d", num_samples=500).input_shape == (40,)
    assert data.load("mnist1d", num_samples=500, view="sequence").input_shape == (40, 1)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100",
                                  "svhn_cropped"])
def test_tfds_image_sets_under_mock_data(tmp_path, name):
    with tfds.testing.mock_data(num_examples=16):
        cfg = make_config(model={"name": "cnn", "depth": 1, "channels": 4},
                          dataset={"name": name},
                          train={"steps": 2, "log_every": 1, "eval_every": 2, "batch_size": 8})
        s = train.run(cfg, tmp_path)
        ds = data.load(name)
    assert s["status"] == "completed"
    assert records(tmp_path)[0]["grad_norm/0"] is not None
    rgb = name in ("cifar10", "cifar100", "svhn_cropped")
    assert ds.input_shape == ((32, 32, 3) if rgb else (28, 28, 1))
    assert ds.num_classes == (100 if name == "cifar100" else 10)
    assert abs(float(ds.x_train.mean())) < 1e-3  # standardised


def test_unprepared_tfds_dataset_names_the_command(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load("mnist", data_dir=str(tmp_path))
    assert "tfds build mnist" in str(e.value) and "\n" not in str(e.value)


def test_incompatible_combinations_are_clear():
    with pytest.raises(models.ModelError, match="needs sequence or image inputs"):
        experiment.build(make_config(model={"name": "cnn"}))
    with pytest.raises(models.ModelError, match="needs a ratings dataset"):
        experiment.build(make_config(model={"name": "recommender"}, dataset={"name": "digits"}))
    with pytest.raises(ConfigError, match="model.dim .* multiple of model.heads"):
        make_config(model={"name": "transformer", "dim": 10, "heads": 4})
    with pytest.raises(ConfigError, match="model 'cnn' has no parameter width"):
        make_config(model={"name": "cnn", "width": 3})


def test_auto_init_matches_each_activation():
    assert [activations.recommended_init(a) for a in ("relu", "tanh", "selu", "gelu")] == [
        "he", "glorot", "lecun", "he"]
    for act, fan in (("relu", 2.0), ("tanh", 1.0), ("selu", 1.0)):
        cfg = make_config(activation={"name": act}, init={"name": "auto"},
                          model={"depth": 2, "width": 512})
        exp = experiment.build(cfg)
        p, _ = exp.model.init(jax.random.PRNGKey(0), jnp.ones((1, 2)))
        # hidden layer 512 -> 512: he 2/512, glorot 2/1024, lecun 1/512
        assert np.var(np.asarray(p["hidden1_kernel"])) == pytest.approx(fan / 512, rel=0.05)
