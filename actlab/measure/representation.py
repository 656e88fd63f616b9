"""What a layer's representation still holds: dormant units and effective rank (pure jnp).

Per hidden layer l, on the fixed probe batch, with H_l the layer's output h = phi(z) as a
matrix [examples, units] (conv layers: every position an example, each channel a unit):

- dormant_frac: the tau-dormant fraction (Sokar et al. 2023). Unit i's score is
  s_i = E_x |h_i(x)| / ((1/U) sum_k E_x |h_k(x)|); a unit is dormant when s_i <= tau
  (`train.dormant_tau`, 0.025; tau = 0 counts exactly inactive units). For every
  activation, not only those with a flat side; a layer whose outputs are all zero is
  wholly dormant.
- erank: effective rank of H_l as it is (not centred), exp(-sum_k p_k log p_k) with
  p_k = sigma_k / sum_j sigma_j over its singular values (Roy & Vetterli 2007, as Dohare
  et al. 2024 use it); 0 for a zero matrix.
- srank: srank_0.01 (Kumar et al. 2021), the number of singular values, largest first,
  that hold 99% of their sum.
- weight_mag: mean |w| of layer l's kernel (actlab.models.base.Model.kernel_abs_means).
- preact_mean, preact_std (family preact_drift): mean and std of the pre-activations z_l
  over probe examples and units; preact_mean_drift, preact_std_drift: their change since the
  current task's first step (the run's first step for a fixed task), which the engine keeps.
"""

from __future__ import annotations

from collections.abc import Collection

import jax
import jax.numpy as jnp

from actlab.measure.metrics import REPRESENTATION_METRICS, Layers

SRANK_DELTA = 0.01


def as_matrices(h: Layers) -> list[jax.Array]:
    """Each layer's output as [examples, units] (positions of a conv layer are examples)."""
    if isinstance(h, (list, tuple)):
        return [a.reshape(-1, a.shape[-1]) for a in h]
    return [h[l] for l in range(h.shape[0])]


def dormant_frac(h_PxU: jax.Array, tau: float) -> jax.Array:
    """The fraction of units whose mean |h| is at most tau times the layer's mean."""
    a_U = jnp.mean(jnp.abs(h_PxU.astype(jnp.float32)), axis=0)
    return jnp.mean(a_U <= tau * jnp.mean(a_U))


def ranks(h_PxU: jax.Array, delta: float = SRANK_DELTA) -> tuple[jax.Array, jax.Array]:
    """(erank, srank_delta) of the matrix from its singular values."""
    s = jnp.linalg.svd(h_PxU.astype(jnp.float32), compute_uv=False)  # descending
    total = jnp.sum(s)
    p = s / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    erank = jnp.where(total > 0, jnp.exp(entropy), 0.0)
    # the smallest k whose k largest values reach (1 - delta) of the sum
    srank = jnp.sum(jnp.cumsum(s) < (1.0 - delta) * total) + 1
    return erank, jnp.where(total > 0, srank, 0).astype(jnp.float32)


def preact_moments(z: Layers) -> tuple[jax.Array, jax.Array]:
    """Mean and std of each layer's pre-activations over examples and units ([L] each)."""
    mats = [a.astype(jnp.float32) for a in as_matrices(z)]
    return (jnp.stack([jnp.mean(a) for a in mats]), jnp.stack([jnp.std(a) for a in mats]))


def representation_metrics(h: Layers, selected: Collection[str] = REPRESENTATION_METRICS,
                           tau: float = 0.025) -> dict[str, jax.Array]:
    """dormant_frac, erank, srank per layer ([L] each), the selected ones."""
    mats = as_matrices(h)
    out: dict[str, jax.Array] = {}
    if "dormant_frac" in selected:
        out["dormant_frac"] = jnp.stack([dormant_frac(m, tau) for m in mats])
    if {"erank", "srank"} & set(selected):
        both = [ranks(m) for m in mats]
        if "erank" in selected:
            out["erank"] = jnp.stack([e for e, _ in both])
        if "srank" in selected:
            out["srank"] = jnp.stack([r for _, r in both])
    return out
