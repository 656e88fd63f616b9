"""actlab.watch: a linen module's measurements inside a researcher's own training loop.

    w = actlab.watch(module, x_example, num_classes=10, tx=optax.adam(1e-3),
                     sites={"Dense_0": "relu"})
    state = w.init(jax.random.PRNGKey(0))
    state, m = jax.jit(w.step)(state, (x, y), (x_probe, y_probe))   # m: the flat record
    states = jax.vmap(w.init)(jax.random.split(key, 8))             # seeds, vmapped

The functions are pure and jittable (`jax.vmap` over a stacked state runs seeds in one
program); the module's layers are discovered as for model=custom (actlab.models.custom),
and `m` holds exactly the keys the engine writes to metrics.jsonl (`grad_norm/0`,
`dead_frac/1`, `grad_norm/out`, `train/loss`, ...), of the parameters the step was given
(theta_t) and of its update.

Like `wandb.watch(log="all")`, per-layer distributions of the parameters and of the
gradient go to TensorBoard or W&B through any actlab writer:

    writer = sinks.make_writer(["tensorboard"], "runs/a", members=[{"seed": 0}])  # actlab.sinks
    new, out = w.update(state, batch)
    w.log(writer, t, w.measure(state, out, xp, yp), w.histograms(state, out))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from actlab.config.sections import METRICS
from actlab.engine import step as step_lib
from actlab.engine.experiment import layer_consts
from actlab.engine.state import TrainState
from actlab.measure import metrics as metrics_lib
from actlab.measure.heads import Head, head
from actlab.models import Model
from actlab.models.base import Role
from actlab.models.custom import watched
from actlab.sinks.base import Histograms, Writer


def flat(m: Mapping[str, Any]) -> dict[str, jax.Array]:
    """One member's measurement keyed as its record (actlab.runs.records.to_records' rule):
    a scalar under its key, an array's entries under `<key>/<i>` (per layer: `<key>/<l>`)."""
    out: dict[str, jax.Array] = {}
    for k, v in m.items():
        v = jnp.asarray(v)
        if v.ndim == 0:
            out[k] = v
        else:
            out.update({f"{k}/{i}": x for i, x in enumerate(v.reshape(-1))})
    return out


@dataclasses.dataclass(frozen=True)
class Watcher:
    """A watched module's pure functions (see the module docstring)."""

    model: Model
    head: Head
    tx: optax.GradientTransformation
    x_example: Any  # one batch of inputs (initialisation)
    selected: tuple[str, ...] = METRICS

    @property
    def layers(self) -> tuple[str, ...]:
        """Layer l's module path, by index."""
        return self.model.layer_names or ()

    def init(self, key: jax.Array) -> TrainState:
        """A fresh state from `key` (the module's own initialisation)."""
        params, model_state = self.model.init(key, jnp.asarray(self.x_example))
        zeros = jnp.zeros((self.model.num_layers,), jnp.float32)
        return TrainState(params=params, opt_state=self.tx.init(params),
                          model_state=model_state, step=jnp.zeros((), jnp.int32),
                          diverged_at=jnp.full((), -1, jnp.int32), key=key,
                          consts={k: jnp.asarray(v) for k, v in
                                  layer_consts(self.model.specs).items()},
                          extra={"ref": {"mean": zeros, "std": zeros}, "plastic": None})

    def update(self, state: TrainState, batch: tuple[jax.Array, jax.Array],
               rng: jax.Array | None = None) -> tuple[TrainState, dict[str, Any]]:
        """One optimizer step (the engine's train_step, divergence gate included) and what
        `measure` needs of it."""
        eps = (step_lib.zero_perturbation(self.model, state.params, state.model_state,
                                          batch[0]) if "delta_norm" in self.selected else None)
        return step_lib.train_step(state, batch, rng, model=self.model, tx=self.tx,
                                   loss_fn=step_lib.loss_fn(self.model, self.head), eps=eps)

    def measure(self, state: TrainState, out: dict[str, Any], x_probe: jax.Array,
                y_probe: jax.Array) -> dict[str, jax.Array]:
        """The flat record of theta_t (`state`, the one `update` was given) and its update."""
        m = step_lib.measure(state, out, x_probe, y_probe, model=self.model, head=self.head,
                             selected=self.selected)
        return flat(m)

    def histograms(self, state: TrainState, out: dict[str, Any], bins: int = 30
                   ) -> dict[str, tuple[jax.Array, jax.Array, jax.Array]]:
        """Per-layer distributions (jittable, vmappable) of theta_t's parameters
        (`params/<l>`, `params/out`) and of the gradient `update` took (`grads/<l>`,
        `grads/out`): every leaf of the layer together, as metrics.histogram's (edges,
        counts, moments)."""
        roles = jax.tree.leaves(self.model.labels(state.params),
                                is_leaf=lambda r: isinstance(r, Role))
        hists = {}
        for kind, tree in (("params", state.params), ("grads", out["grads"])):
            groups: dict[str, list[jax.Array]] = {}
            for role, leaf in zip(roles, jax.tree.leaves(tree), strict=True):
                if role.group in ("layer", "out"):
                    name = f"{kind}/{role.layer if role.group == 'layer' else 'out'}"
                    groups.setdefault(name, []).append(jnp.ravel(leaf).astype(jnp.float32))
            hists.update({k: metrics_lib.histogram(jnp.concatenate(v), bins)
                          for k, v in groups.items()})
        return hists

    def log(self, writer: Writer, step: int, record: Mapping[str, Any],
            hists: Mapping[str, tuple[Any, Any, Any]] | None = None) -> None:
        """Hand one step's record (and `histograms`) to an actlab writer, one record per
        member where the state was vmapped (`member` i, as the engine writes them)."""
        rec = {k: np.asarray(v) for k, v in record.items()}
        shapes = {v.shape for v in rec.values()}
        members = next(iter(shapes))[0] if shapes and shapes != {()} else None
        rows = [{"step": int(step), "member": i,
                 **{k: float(v if members is None else v[i]) for k, v in rec.items()}}
                for i in range(members or 1)]
        writer.write_records(rows)
        if hists:
            out = {}
            for k, (edges, counts, moments) in hists.items():
                e, c, m = (np.asarray(a, np.float64) for a in (edges, counts, moments))
                if members is None:
                    e, c, m = e[None], c[None], m[None]
                out[k] = Histograms(edges=e, counts=c, num=m[:, 0], sum=m[:, 1],
                                    sum_squares=m[:, 2])
            writer.write_histograms(int(step), out)

    def step(self, state: TrainState, batch: tuple[jax.Array, jax.Array],
             probe: tuple[jax.Array, jax.Array] | None = None,
             rng: jax.Array | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        """`update` then `measure` on `probe` (default: the batch): (new state, record)."""
        new, out = self.update(state, batch, rng)
        xp, yp = probe if probe is not None else batch
        return new, self.measure(state, out, xp, yp)


def watch(module: Any, x_example: Any, num_classes: int, *,
          tx: optax.GradientTransformation | None = None,
          sites: Mapping[str, str] | None = None, train_flag: str | None = None,
          metrics: str | Iterable[str] = "all", loss: str = "softmax") -> Watcher:
    """Watch a linen module: `x_example` a batch of inputs [B, ...], its output logits
    [B, num_classes]; `tx` the optimizer (default Adam 1e-3); `sites` and `train_flag` as
    model.sites and model.train_flag; `metrics` "all" or families (README: metrics);
    `loss` softmax (cross-entropy) or one_vs_all."""
    x_example = np.asarray(x_example)
    model = watched(module, x_example.shape[1:], num_classes, sites, train_flag)
    selected = METRICS if metrics == "all" else tuple(m for m in METRICS if m in set(metrics))
    unknown = set(() if metrics == "all" else metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric families {sorted(unknown)}; known: "
                         f"{', '.join(METRICS)}")
    return Watcher(model=model, head=head(loss), tx=tx or optax.adam(1e-3),
                   x_example=x_example, selected=selected)
