"""The measurement step: the per-layer metrics of theta_t, and evaluation on a split.

`measure(state, out, ...)` takes the state a training step was given together with that
step's `out`: the pair describes theta_t and its update. Handing it the state the step
returned (theta_t+1) is refused when the steps are known.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from actlab.config import METRICS
from actlab.measure import metrics, representation, transformer
from actlab.measure.heads import Head
from actlab.models import Model
from actlab.models.base import PyTree


class MemberState(Protocol):
    """What `measure` reads of a member's state (actlab.engine.state.TrainState)."""

    params: Any
    model_state: Any
    step: jax.Array
    consts: dict[str, jax.Array]


def check_pair(state: MemberState, out: dict[str, Any]) -> None:
    """Refuse a state of another step than the one `out` was computed at.

    Inside a trace the steps are not known: the program always passes the pair it made.
    """
    taken = out.get("step")
    if taken is None or isinstance(taken, jax.core.Tracer) or isinstance(
            state.step, jax.core.Tracer):
        return
    if int(jnp.asarray(taken)) != int(jnp.asarray(state.step)):
        raise ValueError(
            f"measure describes theta_t: pass the state train_step was given (step "
            f"{int(taken)}), not the one it returned (step {int(state.step)})")


def measure(state: MemberState, out: dict[str, Any], x_fixed: jax.Array, y_fixed: jax.Array, *,
            model: Model, head: Head,
            selected: Iterable[str] = METRICS,
            hist_bins: int = 0, dormant_tau: float = 0.025) -> dict[str, jax.Array]:
    """The per-layer metrics of theta_t (`state`) and its update (`out` of train_step).

    Only the selected metric families are computed; train/* (on the probe batch) and
    the learned activation parameters always are. `hist_bins` > 0 adds the histograms
    of every hidden layer's pre-activations (metrics.HIST_KEYS, arrays kept out of records);
    `dormant_tau` is dormant_frac's threshold.
    """
    check_pair(state, out)
    selected = set(selected)
    m = metrics.parameter_metrics(model.layer_sqnorms, state.params, out["grads"],
                                  out["updates"], selected)
    if "delta_norm" in selected:
        m["delta_norm"] = metrics.delta_norm(out["grad_eps"])
    acts = selected & set(metrics.ACTIVATION_METRICS)
    signal = selected & set(metrics.SIGNAL_METRICS)
    rep = selected & set(metrics.REPRESENTATION_METRICS)
    drift = "preact_drift" in selected
    blocks = selected & set(transformer.FAMILIES)
    logits, aux, _ = model.apply(state.params, state.model_state, x_fixed,
                                 capture=bool(acts or signal or rep or hist_bins or drift
                                              or blocks))
    m.update({f"train/{k}": v for k, v in head.measures(logits, y_fixed).items()})
    # the output's size (the coordinate check's readout row): RMS over examples and classes
    m["logits_rms"] = jnp.sqrt(jnp.mean(jnp.square(logits.astype(jnp.float32))))
    if acts:
        c = state.consts
        m.update(metrics.activation_metrics(aux["z"], aux["h"], aux["dphi"], c["sat_lo"],
                                            c["sat_hi"], c["dphi_max"], acts, c["can_die"],
                                            gate=aux.get("gate"), flow=aux.get("flow")))
    if signal:
        m.update(metrics.signal_metrics(aux["z"], signal))
    if "q" in signal and "attn_logits" in aux:  # attention: the coordinate check's logit row
        mask = (aux.get("attn_mask") or [None])[0]
        m["attn_logits_rms"] = jnp.stack([transformer.attn_logits_rms(a, mask)
                                          for a in aux["attn_logits"]])
    if blocks:
        m.update(transformer.transformer_metrics(aux, blocks))
    if rep:
        m.update(representation.representation_metrics(aux["h"], rep, dormant_tau))
    if drift:  # the drift itself needs the task's first value: the program adds it
        m["preact_mean"], m["preact_std"] = representation.preact_moments(aux["z"])
    if "weight_mag" in selected:
        m["weight_mag"] = model.kernel_abs_means(state.params)
    if hist_bins:
        m.update(metrics.preact_histograms(aux["z"], hist_bins))
    m.update(model.activation_params(state.params))
    return m


def evaluate(params: PyTree, model_state: PyTree, x: jax.Array, y: jax.Array, *, model: Model,
             head: Head, weights: jax.Array | None = None,
             prefix: str = "eval") -> dict[str, jax.Array]:
    """eval/loss, eval/acc (eval/rmse for ratings) on the given split, evaluation mode.

    `weights` [N] (0 or 1): only the examples weighted 1 count (a task's classes).
    """
    logits, _, _ = model.apply(params, model_state, x)
    if weights is None:
        return {f"{prefix}/{k}": v for k, v in head.measures(logits, y).items()}
    per_example = jax.vmap(lambda lg, t: head.loss(lg[None], t[None]))(logits, y)
    correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
    n = jnp.maximum(jnp.sum(weights), 1.0)
    return {f"{prefix}/loss": jnp.sum(weights * per_example) / n,
            f"{prefix}/acc": jnp.sum(weights * correct) / n}



