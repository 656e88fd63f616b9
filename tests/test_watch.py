"""actlab.watch in a plain optax training loop (no engine): seeds vmapped, the record's keys
those of metrics.jsonl, its gradient norms against jax.grad of the module's own loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from custom_clients import DropoutMLP, PlainMLP

import actlab
from actlab import data


def test_watch_in_a_plain_loop_vmapped_over_seeds():
    ds = data.load("digits")
    x, y = jnp.asarray(ds.x_train[:64]), jnp.asarray(ds.y_train[:64])
    module = PlainMLP(width=16, num_classes=10)
    w = actlab.watch(module, x, 10, tx=optax.sgd(0.1), sites={"Dense_0": "relu",
                                                             "Dense_1": "tanh"})
    assert w.layers == ("Dense_0", "Dense_1")
    states = jax.vmap(w.init)(jax.random.split(jax.random.PRNGKey(0), 3))
    step = jax.jit(jax.vmap(w.step, in_axes=(0, None, None)))
    first = None
    for _ in range(30):
        prev = states
        states, m = step(states, (x, y), (x, y))
        first = first or (prev, m)
    prev, m0 = first
    assert m0["grad_norm/0"].shape == (3,)
    assert len(set(np.asarray(m0["grad_norm/0"]).tolist())) == 3  # three seeds, three inits
    for k in ("grad_norm/0", "grad_norm/1", "grad_norm/out", "dead_frac/0", "sat_frac/1", "q/0",
              "delta_norm/1", "erank/0", "train/loss"):
        assert k in m0, k
    assert np.all(np.asarray(m["train/loss"]) < np.asarray(m0["train/loss"]))  # it learns

    p = jax.tree.map(lambda a: a[1], prev.params)["inner"]  # seed 1 at step 0

    def loss(p):
        logits = module.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    g = jax.grad(loss)(p)
    ref = np.sqrt(sum(np.sum(np.square(np.asarray(a, np.float64)))
                      for a in jax.tree.leaves(g["Dense_1"])))
    assert float(m0["grad_norm/1"][1]) == pytest.approx(ref, rel=1e-5)


def test_watch_a_module_with_state_and_a_flag():
    ds = data.load("digits")
    x, y = jnp.asarray(ds.x_train[:32]), jnp.asarray(ds.y_train[:32])
    w = actlab.watch(DropoutMLP(num_classes=10), x, 10, train_flag="!deterministic",
                     metrics=["grad_norm", "dead_frac"], sites={"Dense_0": "gelu"})
    state = w.init(jax.random.PRNGKey(1))
    new, m = jax.jit(w.step)(state, (x, y), None, jax.random.PRNGKey(2))
    assert set(m) >= {"grad_norm/0", "grad_norm/out", "dead_frac/0", "train/loss"}
    assert "q/0" not in m
    stats = jax.tree.leaves(new.model_state)  # batch statistics moved in training mode
    assert any(not np.allclose(a, b) for a, b in zip(stats, jax.tree.leaves(state.model_state),
                                                       strict=True))
    with pytest.raises(ValueError, match="unknown metric families"):
        actlab.watch(DropoutMLP(num_classes=10), x, 10, metrics=["grad_nrom"])


@pytest.mark.slow  # heavy; its module keeps faster tests: CI runs it after the suite
def test_watch_histograms_of_parameters_and_gradients_reach_tensorboard(tmp_path):
    """Like wandb.watch(log="all"): per layer, theta's and the gradient's distributions,
    read back with TensorBoard's reader and checked against numpy on the same arrays."""
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from actlab import sinks

    ds = data.load("digits")
    x, y = jnp.asarray(ds.x_train[:32]), jnp.asarray(ds.y_train[:32])
    w = actlab.watch(PlainMLP(width=8, num_classes=10), x, 10, tx=optax.sgd(0.1),
                     metrics=["grad_norm"])
    states = jax.vmap(w.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    update = jax.jit(jax.vmap(w.update, in_axes=(0, None)))
    new, out = update(states, (x, y))
    record = jax.vmap(w.measure, in_axes=(0, 0, None, None))(states, out, x, y)
    hists = jax.jit(jax.vmap(w.histograms))(states, out)
    writer = sinks.make_writer(["tensorboard"], tmp_path, members=[{"seed": 0}, {"seed": 1}])
    w.log(writer, 7, record, hists)
    writer.close()
    for seed in (0, 1):
        ea = ea_mod.EventAccumulator(str(tmp_path / "tensorboard" / f"seed={seed}"),
                                     size_guidance={"histograms": 0, "scalars": 0})
        ea.Reload()
        assert ea.Scalars("grad_norm/layer_0")[0].value == pytest.approx(
            float(record["grad_norm/0"][seed]), rel=1e-6)
        for kind, tree in (("params", states.params), ("grads", out["grads"])):
            for tag, name in (("layer_1", "Dense_1"), ("out", "Dense_2")):
                v = np.concatenate([np.asarray(a[seed], np.float64).ravel()
                                    for a in jax.tree.leaves(tree["inner"][name])])
                h = ea.Histograms(f"{kind}/{tag}")[0]
                assert h.step == 7 and h.histogram_value.num == v.size == (
                    8 * 8 + 8 if name == "Dense_1" else 8 * 10 + 10)
                hv = h.histogram_value
                assert hv.min == pytest.approx(v.min(), rel=1e-6, abs=1e-9)
                assert hv.max == pytest.approx(v.max(), rel=1e-6, abs=1e-9)
                assert hv.sum == pytest.approx(v.sum(), rel=1e-4, abs=1e-6)
                assert hv.sum_squares == pytest.approx(np.square(v).sum(), rel=1e-5)
                counts, _ = np.histogram(v, bins=30, range=(v.min(), v.max()))
                # float32 bin edges: a value on an edge may land in the neighbouring bin
                assert np.abs(np.asarray(hv.bucket) - counts).sum() <= 2
