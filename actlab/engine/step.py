"""The training step, as pure module-level functions of one member.

Everything here works on one member (no member axis); the compiled loop
(actlab.engine.loop) maps it over members and steps. Static settings (model, optimizer,
head, selected metrics) are keyword arguments, bound with functools.partial before
jax.jit; `make_train_step(exp)` does that for a notebook:

    train_step = step.make_train_step(exp)
    new_state, out = train_step(state, (x, y), rng)
    m = step.measure(state, out, x_fixed, y_fixed, model=exp.model, head=exp.head)

A measurement at step t describes theta_t: gradients, delta and update ratio of the
update theta_t -> theta_t+1 on that step's batch (`out` carries the step it was taken
at, and `measure` refuses a state of another step); train/* on the fixed probe batch;
eval/* on the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from actlab.engine.plasticity import Intervention
from actlab.engine.state import (  # noqa: F401  (the state's names, where the step is)
    STREAM_DROPOUT,
    STREAM_PROBES,
    TrainState,
    member,
    step_key,
    stream_key,
)
from actlab.measure.heads import Head
from actlab.measure.step import evaluate, measure  # noqa: F401  (the measurement step)
from actlab.models import Model
from actlab.models.base import PyTree


def draw_batch(state: TrainState, x: jax.Array, y: jax.Array,
               batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The step's batch: drawn with replacement, or every example in order (full batch).

    Targets per position (y [N, T], a next-token set) mark token windows that continue
    each other (actlab.data.base.Dataset): a batch is `batch_size` windows starting at
    offsets drawn uniformly from every position of the stream where a whole window fits,
    its targets the same positions of y.
    """
    n = x.shape[0]
    if batch_size >= n:
        return x, y
    if y.ndim == 2:
        t = x.shape[1]
        start = jax.random.randint(step_key(state), (batch_size, 1), 0, n * t - t + 1)
        idx = start + jnp.arange(t)
        return x.reshape(-1)[idx], y.reshape(-1)[idx]
    idx = jax.random.randint(step_key(state), (batch_size,), 0, n)
    return x[idx], y[idx]


def loss_fn(model: Model, head: Head, capture: bool = False) -> Callable:
    """loss(params, eps, model_state, x, y, rng) -> (mean loss, new model state), training mode.

    With `capture` the auxiliary output is (new model state, every layer's h on the batch).
    """

    def loss(params: PyTree, eps: PyTree, model_state: PyTree, x: jax.Array, y: jax.Array,
             rng: jax.Array | None) -> tuple[jax.Array, Any]:
        logits, aux, new_state = model.apply(params, model_state, x, eps, capture=capture,
                                             train=True, rng=rng)
        return head.loss(logits, y), ((new_state, aux["h"]) if capture else new_state)

    return loss


def zero_perturbation(model: Model, params: PyTree, model_state: PyTree,
                      x: jax.Array) -> PyTree:
    """Zeros shaped like every layer's pre-activation z for inputs x.

    Added to z inside the model, their gradient is d loss / d z (delta) for free.
    """
    shapes = jax.eval_shape(lambda p, ms, x: model.apply(p, ms, x, capture=True)[1]["z"],
                            params, model_state, x)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def gate(state: TrainState, loss: jax.Array, updates: PyTree, opt_state: PyTree,
         model_state: PyTree,
         apply: jax.Array | bool = True) -> TrainState:
    """Apply an update unless the member diverged: a non-finite loss freezes it for good.

    A member that is not live, or not `apply`ing, keeps its parameters bitwise: its
    update is zeroed before it is added (one fused pass with the optimizer's, cheaper
    than selecting parameters afterwards). Divergence is read from the loss alone (a
    non-finite gradient makes the next loss non-finite), which keeps a reduction over
    every gradient out of each step. The optimizer state need not freeze: such a
    member never applies an update again.
    """
    apply = jnp.asarray(apply)
    finite = jnp.isfinite(loss)
    live = state.diverged_at < 0
    ok = finite & live & apply
    gated = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)
    return state.replace(
        params=optax.apply_updates(state.params, gated), opt_state=opt_state,
        model_state=jax.tree.map(lambda n, o: jnp.where(ok, n, o), model_state,
                                 state.model_state),
        step=state.step + apply.astype(jnp.int32),
        diverged_at=jnp.where(live & ~finite & apply, state.step, state.diverged_at))


def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array], rng: jax.Array | None, *,
               model: Model, tx: optax.GradientTransformation, loss_fn: Callable,
               apply: jax.Array | bool = True, eps: PyTree = None,
               plastic: Intervention | None = None) -> tuple[TrainState, dict[str, Any]]:
    """One update on `batch`, through the divergence gate.

    Returns the new state and {"loss", "grads", "updates", "grad_eps", "step"} (grad_eps:
    the gradient with respect to the perturbation `eps`, None without one; step: that of
    `state`, the one `measure` must be given). With apply=False nothing changes (a final
    measurement). `plastic`: an intervention's gradient term and its update after the step
    (continual backpropagation; `loss_fn` must then capture h).
    """
    x, y = batch
    (loss, aux), (grads, grad_eps) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, eps, state.model_state, x, y, rng)
    new_model_state, h = aux if plastic is not None and plastic.needs_h else (aux, None)
    given = plastic.grads(state, grads) if plastic is not None else grads
    updates, opt_state = tx.update(given, state.opt_state, state.params)
    new = gate(state, loss, updates, opt_state, new_model_state, apply)
    if plastic is not None and plastic.needs_h:
        new = plastic.after(new, h, (new.step > state.step) & (new.diverged_at < 0))
    return new, {"loss": loss, "grads": grads, "updates": updates, "grad_eps": grad_eps,
                 "step": state.step}


def placeholder(shapes: PyTree) -> Any:
    """Arrays of these shapes standing for a measurement not taken: NaN (integers: 0)."""
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype)
                        if jnp.issubdtype(s.dtype, jnp.floating)
                        else jnp.zeros(s.shape, s.dtype), shapes)


def switched(fn: Callable, on: jax.Array, *args: Any) -> Any:
    """fn(*args) when `on`, else NaNs of the same structure (lax.cond: off costs nothing)."""
    return jax.lax.cond(on, fn, lambda *a: placeholder(jax.eval_shape(fn, *a)), *args)


def make_train_step(exp: Any, delta: bool = True, donate: bool = False) -> Callable:
    """`train_step(state, batch, rng=None) -> (state, out)` for one member of `exp`, jitted.

    `out` goes to `measure` together with the state *before* the update, so that state is
    kept by default; `donate=True` updates it in place (a loop that never measures).
    `delta` adds the zero perturbation whose gradient is each layer's backward signal
    (delta_norm).
    """
    loss = loss_fn(exp.model, exp.head)

    def bound(state: TrainState, batch: tuple[jax.Array, jax.Array],
              rng: jax.Array | None = None) -> tuple[TrainState, dict[str, Any]]:
        eps = (zero_perturbation(exp.model, state.params, state.model_state, batch[0])
               if delta else None)
        return train_step(state, batch, rng, model=exp.model, tx=exp.tx, loss_fn=loss, eps=eps)

    return jax.jit(bound, donate_argnums=0 if donate else ())
