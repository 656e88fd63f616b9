"""Per-layer training-dynamics metrics: pure jnp functions, called inside jit.

Definitions (the contract in DESIGN.md), per hidden layer l with pre-activation
z and h = phi(z) (for a gated unit z is the gate's pre-activation z_g and
h = gate(z_g) z_v):

- grad_norm: ||d loss / d theta_l||, kernel and bias together, on the step's batch
- weight_norm: ||theta_l||
- update_ratio: ||delta theta_l|| / ||theta_l|| for the step's update
- delta_norm: RMS over the batch of the per-example backward signal
  ||d loss_b / d z_l|| (loss_b is example b's loss; the batch loss is their mean)
- act_mean, act_std: mean and std of h over probe examples and units
- dead_frac: fraction of units with |phi'(z)| <= 1e-12 on every probe example, for
  activations that have an exactly flat side (registry: can_die); 0 for the others.
  A gated unit h = gate(z_g) z_v is dead when its output and both input gradients
  vanish on every probe example: max(|gate'(z_g) z_v|, |gate(z_g)|) <= 1e-12
- gate_mean (gated units only, with act_mean): mean of gate(z_g) over probe examples
  and units
- sat_frac: fraction of (example, unit) pairs with |phi'(z)| < 0.01 max|phi'|
  whose z lies in the activation's saturating tails (registry metadata)
- q: mean of z^2 over probe examples and units (the mean-field length q_l)
- c: mean cosine of z between probe examples 2i and 2i + 1, i < K = min(64, P // 2),
  each example's z flattened (the mean-field correlation c_l; a pair with a zero
  vector counts 0; NaN when P < 2)

- dormant_frac, erank, srank, weight_mag: actlab.measure.representation

For conv layers every position is an example and each channel a unit (c compares
whole flattened feature maps). At step 0, q and c are the measured counterparts of
actlab.theory.predict_layers.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import cast

import jax
import jax.numpy as jnp

from actlab.config import METRICS
from actlab.models.base import PyTree

DEAD_EPS = 1e-12
SAT_REL = 0.01


def norms_from_sq(sq: jax.Array) -> jax.Array:
    """Square root, with a zero-safe gradient (metrics are never differentiated, but be safe)."""
    return jnp.sqrt(jnp.maximum(sq, 0.0))


PARAMETER_METRICS = ("grad_norm", "weight_norm", "update_ratio")
ACTIVATION_METRICS = ("act_mean", "act_std", "dead_frac", "sat_frac")
SIGNAL_METRICS = ("q", "c")
REPRESENTATION_METRICS = ("dormant_frac", "erank", "srank")  # actlab.measure.representation
FAMILIES = (*PARAMETER_METRICS, "delta_norm", *ACTIVATION_METRICS, *SIGNAL_METRICS,
            *REPRESENTATION_METRICS, "weight_mag", "preact_drift", "ffn_sparsity",
            "outlier_kurtosis", "massive_ratio", "attn_entropy", "token_cosine")  # the last five:
# actlab.measure.transformer
assert FAMILIES == METRICS, "actlab.config.METRICS names the families computed here"
MAX_PAIRS = 64  # probe pairs (2i, 2i + 1) that c averages over

# captures of every layer: stacked [L, P, W], or a list of per-layer [P, ..., C] arrays
Layers = jax.Array | list[jax.Array] | tuple[jax.Array, ...]
OptionalLayers = jax.Array | Sequence[jax.Array | None] | None  # gate, flow: gated units only
# z, h, dphi, gate, flow of one layer or of the stack (stacked z: every capture is stacked)
_Captures = tuple[jax.Array, jax.Array, jax.Array, jax.Array | None, jax.Array | None]


def parameter_metrics(sqnorms: Callable[[PyTree], tuple[jax.Array, jax.Array]],
                      params: PyTree, grads: PyTree, updates: PyTree,
                      selected: Collection[str] = PARAMETER_METRICS) -> dict[str, jax.Array]:
    """grad_norm, weight_norm, update_ratio per hidden layer ([L]) and for the output layer.

    Only the `selected` ones are computed; `sqnorms(tree) -> ([L], out)` gives squared
    norms per layer.
    """
    out: dict[str, jax.Array] = {}
    if "grad_norm" in selected:
        g_l, g_out = sqnorms(grads)
        out["grad_norm"], out["grad_norm/out"] = norms_from_sq(g_l), norms_from_sq(g_out)
    if "weight_norm" in selected or "update_ratio" in selected:
        w_l, w_out = (norms_from_sq(a) for a in sqnorms(params))
        if "weight_norm" in selected:
            out["weight_norm"], out["weight_norm/out"] = w_l, w_out
        if "update_ratio" in selected:
            u_l, u_out = sqnorms(updates)
            out["update_ratio"] = norms_from_sq(u_l) / w_l
            out["update_ratio/out"] = norms_from_sq(u_out) / w_out
    return out


def _delta_one(g_Bx: jax.Array) -> jax.Array:
    batch = g_Bx.shape[0]
    per_example_sq = jnp.sum(((batch * g_Bx) ** 2).reshape(batch, -1), axis=-1)  # [B]
    return jnp.sqrt(jnp.mean(per_example_sq))


def delta_norm(grad_eps: Layers) -> jax.Array:
    """RMS over the batch of ||d loss_b / d z_l||, from d(mean loss)/d eps.

    `grad_eps` is stacked [L, B, W] or a list of per-layer [B, ..., C] arrays; returns [L].
    """
    if isinstance(grad_eps, (list, tuple)):
        return jnp.stack([_delta_one(g) for g in grad_eps])
    return jax.vmap(_delta_one)(grad_eps)


def activation_metrics(z: Layers, h: Layers, dphi: Layers, sat_lo_L: jax.Array,
                       sat_hi_L: jax.Array, dphi_max_L: jax.Array,
                       selected: Collection[str] = ACTIVATION_METRICS,
                       can_die_L: jax.Array | None = None, gate: OptionalLayers = None,
                       flow: OptionalLayers = None) -> dict[str, jax.Array]:
    """act_mean, act_std, dead_frac, sat_frac per layer, on the probe batch (the selected ones).

    z, h, dphi are stacked [L, P, W] or lists of per-layer [P, ..., C] arrays (every
    position of a conv layer counts as an example, each channel as a unit).
    sat_lo/sat_hi bound the non-saturating region per layer (NaN where the
    activation has no saturating tail); dphi_max is max |phi'| per layer. can_die
    (1 or 0 per layer, from the registry) says whether the layer's activation has an
    exactly flat side: only then can a unit be dead. Without it, a tanh or sigmoid unit
    saturated far out (float32 rounds 1 - tanh(z)^2 to 0 past |z| ~ 9) would read dead.
    Gated units also pass `gate` (gate(z_g)) and `flow` (max(|dh/dz_g|, |dh/dz_v|)), which
    decides deadness in place of phi'.
    """
    if can_die_L is None:
        can_die_L = jnp.ones_like(dphi_max_L)
    if isinstance(z, (list, tuple)):
        n = len(z)
        gate, flow = gate or [None] * n, flow or [None] * n

        def flat(a: jax.Array | None) -> jax.Array | None:
            return None if a is None else a.reshape(1, -1, a.shape[-1])

        per = [_stacked_metrics(*cast(_Captures, tuple(flat(a) for a in arrays)), sat_lo_L[l:l + 1],
                                sat_hi_L[l:l + 1], dphi_max_L[l:l + 1], can_die_L[l:l + 1],
                                selected)
               for l, arrays in enumerate(zip(z, h, dphi, gate, flow, strict=True))]
        return {k: jnp.concatenate([p[k] for p in per]) for k in per[0]}
    return _stacked_metrics(*cast(_Captures, (z, h, dphi, gate, flow)), sat_lo_L, sat_hi_L,
                            dphi_max_L, can_die_L, selected)


def _stacked_metrics(z_LxPxW: jax.Array, h_LxPxW: jax.Array, dphi_LxPxW: jax.Array,
                     gate_LxPxW: jax.Array | None, flow_LxPxW: jax.Array | None,
                     sat_lo_L: jax.Array, sat_hi_L: jax.Array, dphi_max_L: jax.Array,
                     can_die_L: jax.Array, selected: Collection[str]) -> dict[str, jax.Array]:
    out = {}
    if "act_mean" in selected:
        out["act_mean"] = jnp.mean(h_LxPxW, axis=(1, 2))
        if gate_LxPxW is not None:
            out["gate_mean"] = jnp.mean(gate_LxPxW, axis=(1, 2))
    if "act_std" in selected:
        out["act_std"] = jnp.std(h_LxPxW, axis=(1, 2))
    abs_d = jnp.abs(dphi_LxPxW)
    if "dead_frac" in selected:
        live = abs_d if flow_LxPxW is None else flow_LxPxW
        dead = jnp.mean(jnp.all(live <= DEAD_EPS, axis=1), axis=-1)
        out["dead_frac"] = jnp.where(can_die_L > 0, dead, 0.0)
    if "sat_frac" in selected:
        lo, hi = sat_lo_L[:, None, None], sat_hi_L[:, None, None]
        in_tail = (z_LxPxW < lo) | (z_LxPxW > hi)  # False where lo/hi are NaN
        flat = abs_d < SAT_REL * dphi_max_L[:, None, None]
        out["sat_frac"] = jnp.mean(flat & in_tail, axis=(1, 2))
    return out


def num_pairs(p: int) -> int:
    """K = min(64, P // 2): the probe pairs (2i, 2i + 1), i < K, that c averages over."""
    return min(MAX_PAIRS, p // 2)


def signal_metrics(z: Layers,
                   selected: Collection[str] = SIGNAL_METRICS) -> dict[str, jax.Array]:
    """q (mean z^2) and c (mean cosine of z over the pairs (2i, 2i + 1), i < K) per layer.

    z is stacked [L, P, W] or a list of per-layer [P, ..., C] arrays; returns [L] each.
    """
    if isinstance(z, (list, tuple)):
        per = [_signal(zl.reshape(1, zl.shape[0], -1), selected) for zl in z]
        return {k: jnp.concatenate([p[k] for p in per]) for k in per[0]}
    return _signal(z.reshape(z.shape[0], z.shape[1], -1), selected)


def _signal(z_LxPxN: jax.Array, selected: Collection[str]) -> dict[str, jax.Array]:
    out = {}
    if "q" in selected:
        out["q"] = jnp.mean(jnp.square(z_LxPxN), axis=(1, 2))
    if "c" in selected:
        k = num_pairs(z_LxPxN.shape[1])
        if k == 0:
            out["c"] = jnp.full(z_LxPxN.shape[:1], jnp.nan, z_LxPxN.dtype)
        else:
            a_LxKxN, b_LxKxN = z_LxPxN[:, 0:2 * k:2], z_LxPxN[:, 1:2 * k:2]
            den_LxK = (jnp.sqrt(jnp.sum(jnp.square(a_LxKxN), -1))
                       * jnp.sqrt(jnp.sum(jnp.square(b_LxKxN), -1)))
            dot_LxK = jnp.sum(a_LxKxN * b_LxKxN, -1)
            cos_LxK = jnp.where(den_LxK > 0, dot_LxK / jnp.where(den_LxK > 0, den_LxK, 1.0), 0.0)
            out["c"] = jnp.mean(cos_LxK, -1)
    return out


HIST_KEYS = ("preact_hist/edges", "preact_hist/counts", "preact_hist/moments")


def preact_histograms(z: Layers, bins: int) -> dict[str, jax.Array]:
    """Per-layer histograms of the pre-activations z on the probe batch, in float32.

    z is stacked [L, P, W] or a list of per-layer arrays. Each layer's finite values are
    counted in `bins` equal bins between their min and max (the last bin closed):
    edges [L, bins + 1], counts [L, bins], moments [L, 3] = (num, sum, sum of squares).
    A layer without a finite value gets zero counts and num 0.
    """
    layers = list(z) if isinstance(z, (list, tuple)) else [z[l] for l in range(z.shape[0])]
    per = [histogram(zl.reshape(-1).astype(jnp.float32), bins) for zl in layers]
    return {k: jnp.stack([p[i] for p in per]) for i, k in enumerate(HIST_KEYS)}


def histogram(v: jax.Array, bins: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """v's finite values in `bins` equal bins between their min and max: (edges [bins + 1],
    counts [bins], moments [3] = (num, sum, sum of squares))."""
    ok = jnp.isfinite(v)
    lo = jnp.min(jnp.where(ok, v, jnp.inf))
    hi = jnp.max(jnp.where(ok, v, -jnp.inf))
    lo, hi = jnp.where(jnp.any(ok), lo, 0.0), jnp.where(jnp.any(ok), hi, 0.0)
    half = jnp.where(hi > lo, 0.0, 0.5)  # every value equal: one unit-wide range around it
    lo, hi = lo - half, hi + half
    edges = lo + (hi - lo) * jnp.arange(bins + 1, dtype=jnp.float32) / bins
    idx = jnp.clip(jnp.floor((v - lo) / (hi - lo) * bins), 0, bins - 1).astype(jnp.int32)
    counts = jnp.zeros(bins, jnp.float32).at[idx].add(ok.astype(jnp.float32))
    v0 = jnp.where(ok, v, 0.0)
    moments = jnp.stack([ok.sum().astype(jnp.float32), v0.sum(), jnp.square(v0).sum()])
    return edges, counts, moments


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to the integer labels."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)
