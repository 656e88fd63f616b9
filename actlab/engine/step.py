"""The training step and the measurements, as pure module-level functions.

Everything here works on one member (no member axis); `program.py` maps it over
members and steps. Static settings (model, optimizer, head, selected metrics)
are keyword arguments, bound with functools.partial before jax.jit:

    loss = step.loss_fn(exp.model, exp.head)
    new_state, out = step.train_step(state, (x, y), rng, model=exp.model, tx=exp.tx,
                                     loss_fn=loss)
    m = step.measure(state, out, x_probe, y_probe, model=exp.model, head=exp.head)

A measurement at step t describes theta_t: gradients, delta and update ratio of
the update theta_t -> theta_t+1 on that step's batch; train/* on the fixed probe
batch; eval/* on the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from actlab.measure import metrics
from actlab.measure.heads import Head
from actlab.measure.probes import estimators as probes
from actlab.measure.probes import spectra
from actlab.models import Model

# Random streams, each folded into the member's key for step t: fold_in(key, t) draws
# the batch; these fold that step key once more.
STREAM_DROPOUT = 1
STREAM_PROBE = 2


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (one member; the engine stacks members)."""

    params: Any
    opt_state: Any
    model_state: Any  # non-parameter collections, e.g. batch-norm running statistics
    step: jax.Array  # int32: updates applied so far
    diverged_at: jax.Array  # int32: step of the first non-finite loss, -1 if none
    key: jax.Array  # the member's key for batches, folded with the step
    # metric constants per layer ([L] each): saturation bounds (NaN: never saturates)
    # and max |phi'|; they depend on vmapped activation parameters
    consts: dict[str, jax.Array]


def step_key(state: TrainState) -> jax.Array:
    """The key of the state's current step (draws its batch)."""
    return jax.random.fold_in(state.key, state.step)


def stream_key(state: TrainState, stream: int) -> jax.Array:
    """A key of the current step for one use (STREAM_DROPOUT, STREAM_PROBE)."""
    return jax.random.fold_in(step_key(state), stream)


def draw_batch(state: TrainState, x: jax.Array, y: jax.Array,
               batch_size: int) -> tuple[jax.Array, jax.Array]:
    """The step's batch: drawn with replacement, or every example in order (full batch)."""
    n = x.shape[0]
    if batch_size >= n:
        return x, y
    idx = jax.random.randint(step_key(state), (batch_size,), 0, n)
    return x[idx], y[idx]


def loss_fn(model: Model, head: Head) -> Callable:
    """loss(params, eps, model_state, x, y, rng) -> (mean loss, new model state), training mode."""

    def loss(params, eps, model_state, x, y, rng):
        logits, _, new_state = model.apply(params, model_state, x, eps, train=True, rng=rng)
        return head.loss(logits, y), new_state

    return loss


def zero_perturbation(model: Model, params, model_state, x: jax.Array):
    """Zeros shaped like every layer's pre-activation z for inputs x.

    Added to z inside the model, their gradient is d loss / d z (delta) for free.
    """
    shapes = jax.eval_shape(lambda p, ms, x: model.apply(p, ms, x, capture=True)[1]["z"],
                            params, model_state, x)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def gate(state: TrainState, loss: jax.Array, updates, opt_state, model_state,
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
               apply: jax.Array | bool = True, eps=None) -> tuple[TrainState, dict[str, Any]]:
    """One update on `batch`, through the divergence gate.

    Returns the new state and {"loss", "grads", "updates", "grad_eps"} (grad_eps: the
    gradient with respect to the perturbation `eps`, None without one). With
    apply=False nothing changes (a final measurement).
    """
    x, y = batch
    (loss, new_model_state), (grads, grad_eps) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, eps, state.model_state, x, y, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = gate(state, loss, updates, opt_state, new_model_state, apply)
    return new, {"loss": loss, "grads": grads, "updates": updates, "grad_eps": grad_eps}


def measure(state: TrainState, out: dict[str, Any], x_probe: jax.Array, y_probe: jax.Array, *,
            model: Model, head: Head,
            selected: Iterable[str] = metrics.FAMILIES,
            hist_bins: int = 0) -> dict[str, jax.Array]:
    """The per-layer metrics of theta_t (`state`) and its update (`out` of train_step).

    Only the selected metric families are computed; train/* (on the probe batch) and
    the learned activation parameters always are. `hist_bins` > 0 adds the histograms
    of every hidden layer's pre-activations (metrics.HIST_KEYS, arrays kept out of records).
    """
    selected = set(selected)
    m = metrics.parameter_metrics(model.layer_sqnorms, state.params, out["grads"],
                                  out["updates"], selected)
    if "delta_norm" in selected:
        m["delta_norm"] = metrics.delta_norm(out["grad_eps"])
    acts = selected & set(metrics.ACTIVATION_METRICS)
    signal = selected & set(metrics.SIGNAL_METRICS)
    logits, aux, _ = model.apply(state.params, state.model_state, x_probe,
                                 capture=bool(acts or signal or hist_bins))
    m.update({f"train/{k}": v for k, v in head.measures(logits, y_probe).items()})
    if acts:
        c = state.consts
        m.update(metrics.activation_metrics(aux["z"], aux["h"], aux["dphi"], c["sat_lo"],
                                            c["sat_hi"], c["dphi_max"], acts, c["can_die"],
                                            gate=aux.get("gate"), flow=aux.get("flow")))
    if signal:
        m.update(metrics.signal_metrics(aux["z"], signal))
    if hist_bins:
        m.update(metrics.preact_histograms(aux["z"], hist_bins))
    m.update(model.activation_params(state.params))
    return m


def evaluate(params, model_state, x: jax.Array, y: jax.Array, *, model: Model,
             head: Head) -> dict[str, jax.Array]:
    """eval/loss, eval/acc (eval/rmse for ratings) on the given split, evaluation mode."""
    logits, _, _ = model.apply(params, model_state, x)
    return {f"eval/{k}": v for k, v in head.measures(logits, y).items()}


def probe_loss(model: Model, head: Head, model_state) -> Callable:
    """loss(params, x, y) in evaluation mode: deterministic and separable per example."""

    def loss(params, x, y):
        return head.loss(model.apply(params, model_state, x)[0], y)

    return loss


LAYER_SUFFIX = "_layer"  # the probe library's name of an [L] array, one entry per layer
DENSITY_KEYS = ("hessian/slq_nodes", "hessian/slq_weights")  # [samples, iters] arrays


def per_layer(out: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """A probe's outputs with each [L] array `<key>_layer` split into scalars `<key>/<l>`.

    `<key>/<l>` is the record key of layer l (the per-layer metrics' convention), so a
    probe can report the whole-network `<key>` and its per-layer values side by side.
    """
    res = {}
    for k, v in out.items():
        if k.endswith(LAYER_SUFFIX):
            base = k[:-len(LAYER_SUFFIX)]
            res.update({f"{base}/{l}": v[l] for l in range(v.shape[0])})
        else:
            res[k] = v
    return res


def hessian_probe(params, model_state, x, y, key, *, model: Model, head: Head, k: int = 1,
                  iters: int = 20, samples: int = 8) -> dict[str, jax.Array]:
    """Curvature of the probe-batch loss (H: its Hessian in the parameters).

    hessian/top_eig and hessian/eig_<i> (i < k): the largest eigenvalues of H (Lanczos,
    `iters` steps); hessian/trace, hessian/trace_se: Hutchinson's estimate of tr(H) from
    `samples` Rademacher vectors and its standard error; per layer l, hessian/top_eig/<l>
    and hessian/trace/<l> (with hessian/trace_se/<l>): the top eigenvalue and the trace
    of the diagonal block of layer l's weights; hessian/slq_nodes and
    hessian/slq_weights ([samples, iters]): the stochastic Lanczos quadrature of H's
    spectral density (actlab.measure.probes). Layer masks come from this member's parameters.
    """
    f = probe_loss(model, head, model_state)

    def loss(p):
        return f(p, x, y)

    masks = probes.layer_masks(model, params)
    k_eig, k_trace, k_slq, k_layer = jax.random.split(key, 4)
    out = {**probes.hessian_eigs(loss, params, k_eig, k, iters),
           **probes.hessian_trace(loss, params, k_trace, samples, masks),
           **probes.hessian_slq(loss, params, k_slq, samples, iters),
           **probes.hessian_layer_top_eig(loss, params, k_layer, masks, iters)}
    return per_layer(out)


def noise_probe(params, model_state, x, y, key, *, model: Model, head: Head,
                chunk: int) -> dict[str, jax.Array]:
    """noise_scale/* on the probe batch (the key is unused: the probe batch is fixed)."""
    return probes.noise_scale(probe_loss(model, head, model_state), params, x, y, chunk)


def gsnr_probe(params, model_state, x, y, key, *, model: Model, head: Head,
               chunk: int) -> dict[str, jax.Array]:
    """gsnr/<l> (layer l's mean gradient signal-to-noise ratio) and gsnr/mean (over all
    parameters), from per-example gradients of the probe batch (the key is unused)."""
    out = probes.gsnr(probe_loss(model, head, model_state), params, x, y,
                      probes.layer_masks(model, params), chunk)
    return per_layer({"gsnr_layer": out["gsnr_layer"], "gsnr/mean": out["gsnr_mean"]})


def weights_probe(params, model_state, x, y, key, *, model: Model,
                  head: Head) -> dict[str, jax.Array]:
    """weights/spectral_norm/<l>, weights/stable_rank/<l>, weights/alpha/<l> of each layer's
    kernel as a [fan_in, out] matrix (actlab.measure.probes.spectra); data and key are unused."""
    return per_layer(spectra.weight_spectra(spectra.layer_kernels(model, params)))


def placeholder(shapes) -> Any:
    """Arrays of these shapes standing for a measurement not taken: NaN (integers: 0)."""
    return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype)
                        if jnp.issubdtype(s.dtype, jnp.floating)
                        else jnp.zeros(s.shape, s.dtype), shapes)


def switched(fn: Callable, on: jax.Array, *args) -> Any:
    """fn(*args) when `on`, else NaNs of the same structure (lax.cond: off costs nothing)."""
    return jax.lax.cond(on, fn, lambda *a: placeholder(jax.eval_shape(fn, *a)), *args)
