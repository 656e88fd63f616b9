"""Per-layer training-dynamics metrics: pure jnp functions, called inside jit.

Definitions (the contract in DESIGN.md), per hidden layer l with pre-activation
z and h = phi(z):

- grad_norm: ||d loss / d theta_l||, kernel and bias together, on the step's batch
- weight_norm: ||theta_l||
- update_ratio: ||delta theta_l|| / ||theta_l|| for the step's update
- delta_norm: RMS over the batch of the per-example backward signal
  ||d loss_b / d z_l|| (loss_b is example b's loss; the batch loss is their mean)
- act_mean, act_std: mean and std of h over probe examples and units
- dead_frac: fraction of units with |phi'(z)| <= 1e-12 on every probe example
- sat_frac: fraction of (example, unit) pairs with |phi'(z)| < 0.01 max|phi'|
  whose z lies in the activation's saturating tails (registry metadata)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DEAD_EPS = 1e-12
SAT_REL = 0.01


def norms_from_sq(sq: jax.Array) -> jax.Array:
    """Square root, with a zero-safe gradient (metrics are never differentiated, but be safe)."""
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def parameter_metrics(sqnorms, params, grads, updates) -> dict[str, jax.Array]:
    """grad_norm, weight_norm, update_ratio per hidden layer ([L]) and for the output layer."""
    w_l, w_out = sqnorms(params)
    g_l, g_out = sqnorms(grads)
    u_l, u_out = sqnorms(updates)
    w_l, w_out = norms_from_sq(w_l), norms_from_sq(w_out)
    return {
        "grad_norm": norms_from_sq(g_l),
        "weight_norm": w_l,
        "update_ratio": norms_from_sq(u_l) / w_l,
        "grad_norm/out": norms_from_sq(g_out),
        "weight_norm/out": w_out,
        "update_ratio/out": norms_from_sq(u_out) / w_out,
    }


def delta_norm(grad_eps_LxBxW: jax.Array) -> jax.Array:
    """RMS over the batch of ||d loss_b / d z_l||, from d(mean loss)/d eps ([L, B, W] -> [L])."""
    batch = grad_eps_LxBxW.shape[1]
    per_example_sq = jnp.sum((batch * grad_eps_LxBxW) ** 2, axis=-1)  # [L, B]
    return jnp.sqrt(jnp.mean(per_example_sq, axis=-1))


def activation_metrics(z_LxPxW: jax.Array, h_LxPxW: jax.Array, dphi_LxPxW: jax.Array,
                       sat_lo_L: jax.Array, sat_hi_L: jax.Array,
                       dphi_max_L: jax.Array) -> dict[str, jax.Array]:
    """act_mean, act_std, dead_frac, sat_frac per layer, on the probe batch.

    sat_lo/sat_hi bound the non-saturating region per layer (NaN where the
    activation has no saturating tail); dphi_max is max |phi'| per layer.
    """
    abs_d = jnp.abs(dphi_LxPxW)
    zero = abs_d <= DEAD_EPS
    dead = jnp.mean(jnp.all(zero, axis=1), axis=-1)
    lo, hi = sat_lo_L[:, None, None], sat_hi_L[:, None, None]
    in_tail = (z_LxPxW < lo) | (z_LxPxW > hi)  # False where lo/hi are NaN
    flat = abs_d < SAT_REL * dphi_max_L[:, None, None]
    sat = jnp.mean(flat & in_tail, axis=(1, 2))
    return {
        "act_mean": jnp.mean(h_LxPxW, axis=(1, 2)),
        "act_std": jnp.std(h_LxPxW, axis=(1, 2)),
        "dead_frac": dead,
        "sat_frac": sat,
    }


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of argmax predictions equal to the integer labels."""
    return jnp.mean(jnp.argmax(logits, -1) == labels)
