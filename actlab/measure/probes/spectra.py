"""Spectra of the weight matrices, per layer: pure jnp, jittable.

For a layer's kernel W as a [fan_in, out] matrix (a dense kernel as it is; a conv
kernel [k_1, ..., k_d, c_in, c_out] reshaped to [k_1 ... k_d c_in, c_out], the
matrix that maps an input patch to the output channels), with singular values
sigma_1 >= ... >= sigma_M, M = min(fan_in, out):

- spectral_norm = sigma_1 (the largest singular value, not squared)
- stable_rank = ||W||_F^2 / ||W||_2^2 = sum_i sigma_i^2 / sigma_1^2
- alpha: the power-law exponent of the empirical spectral density of the
  eigenvalues lambda_i = sigma_i^2 of the smaller Gram matrix (W'W or WW', whichever
  is M x M; unnormalised), fitted as WeightWatcher does by default (its own
  continuous power-law fit, `WWFit` in weightwatcher/WW_powerlaw.py, which replaces
  the `powerlaw` package's Fit for the plain power law):
  eigenvalues <= 1e-5 are dropped; with the rest sorted, x_0 <= ... <= x_{N-1},
  every x_i but the largest is a candidate xmin; for each,
  alpha_i = 1 + n_i / sum_{j >= i} log(x_j / x_i), n_i = N - i (the continuous MLE),
  and the Kolmogorov-Smirnov distance
  D_i = max_{j >= i} |1 - (x_j / x_i)^(1 - alpha_i) - (j - i) / n_i| (D_i = 1 when
  alpha_i <= 1); the fit takes the first i minimising D_i. alpha is NaN when fewer
  than 2 eigenvalues pass, and for matrices with M < min_evals (default 10: layers
  WeightWatcher skips). alpha does not depend on the scale of W (apart from the 1e-5
  cut), so WeightWatcher's optional normalisations do not change it.

WeightWatcher splits a conv kernel into k_1 ... k_d matrices [c_in, c_out], one per
kernel position, and fits their eigenvalues together; here a conv layer is the one
reshaped matrix. Its own spectral_norm column is sigma_1^2.
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp

from actlab.models import Model
from actlab.models.base import PyTree

EVALS_THRESH = 1e-5
MIN_EVALS = 10


def as_matrix(kernel: jax.Array) -> jax.Array:
    """A kernel as a [fan_in, out] matrix: every axis but the last folded into fan_in."""
    return kernel.reshape(-1, kernel.shape[-1])


def layer_kernels(model: Model, params: PyTree) -> list[jax.Array]:
    """Each layer's kernel as a [fan_in, out] matrix (`as_matrix`), l < model.num_layers.

    The kernel of layer l is its array labelled Role("layer", l, kernel=True) (row
    l - role.layer of a stacked one); where a layer has several (e.g. a transformer
    block's two dense kernels), the one with most entries, the first on ties.
    `params` are one member's; works on traced arrays, so call it inside jit/vmap.
    """
    roles = jax.tree.leaves(model.labels(params))  # Roles are leaves (not pytree nodes)
    found: list[jax.Array | None] = [None] * model.num_layers
    for role, x in zip(roles, jax.tree.leaves(params), strict=True):
        if role.group != "layer" or not role.kernel:
            continue
        rows = ([(role.layer + i, x[i]) for i in range(x.shape[0])] if role.stacked
                else [(role.layer, x)])
        for l, w in rows:
            if found[l] is None or w.size > found[l].size:
                found[l] = w
    missing = [l for l, w in enumerate(found) if w is None]
    if missing:
        raise ValueError(f"no kernel for layer(s) {missing}")
    return [as_matrix(cast(jax.Array, w)) for w in found]  # none missing


def powerlaw_fit(evals: jax.Array, thresh: float = EVALS_THRESH) -> dict[str, jax.Array]:
    """WeightWatcher's power-law fit of `evals` (1-D): alpha, xmin, ks (D) and n_tail.

    Definitions in the module docstring. Vectorised over candidate xmins (rows of
    at most 128 candidates x N at a time); NaN when fewer than 2 values exceed thresh.
    """
    x = jnp.sort(evals)
    n = x.shape[0]
    ok = x > thresh
    skip = n - jnp.sum(ok)  # values at or below thresh come first
    logx = jnp.log(jnp.where(ok, x, 1.0))
    tail = jnp.cumsum(logx[::-1])[::-1]  # sum_{j >= i} log x_j
    idx = jnp.arange(n)
    count = (n - idx).astype(x.dtype)
    alpha = 1 + count / (tail - count * logx)
    cand = (idx >= skip) & (idx <= n - 2)
    xs = jnp.where(ok, x, 1.0)

    def ks(i: jax.Array) -> jax.Array:
        a = alpha[i]
        model = 1 - (xs / xs[i]) ** (1 - a)
        empirical = (idx - i) / count[i]
        d = jnp.max(jnp.where(idx >= i, jnp.abs(model - empirical), 0.0))
        return jnp.where(jnp.isfinite(a) & (a > 1), d, 1.0)

    d = jax.lax.map(ks, idx, batch_size=min(n, 128))
    d = jnp.where(cand, d, jnp.inf)
    best = jnp.argmin(d)
    good = jnp.any(cand)
    nan = jnp.asarray(jnp.nan, x.dtype)
    return {"alpha": jnp.where(good, alpha[best], nan), "xmin": jnp.where(good, x[best], nan),
            "ks": jnp.where(good, d[best], nan), "n_tail": jnp.where(good, n - best, 0)}


def matrix_spectrum(w: jax.Array, min_evals: int = MIN_EVALS,
                    thresh: float = EVALS_THRESH) -> dict[str, jax.Array]:
    """spectral_norm, stable_rank and alpha of one 2-D matrix (module docstring)."""
    s = jnp.linalg.svd(w, compute_uv=False)
    evals = jnp.square(s)
    top = jnp.max(evals)
    out = {"spectral_norm": jnp.sqrt(top), "stable_rank": jnp.sum(evals) / top}
    if min(w.shape) < min_evals:
        out["alpha"] = jnp.asarray(jnp.nan, w.dtype)
    else:
        out["alpha"] = powerlaw_fit(evals, thresh)["alpha"]
    return out


def weight_spectra(mats: list[Any], min_evals: int = MIN_EVALS,
                   thresh: float = EVALS_THRESH) -> dict[str, jax.Array]:
    """weights/spectral_norm_layer, weights/stable_rank_layer, weights/alpha_layer: [L].

    One entry per matrix of `mats` (e.g. `layer_kernels(model, params)`), definitions in
    the module docstring. One SVD per layer (min(fan_in, out)^2 max(fan_in, out) flops).
    """
    per = [matrix_spectrum(w, min_evals, thresh) for w in mats]
    return {f"weights/{k}_layer": jnp.stack([p[k] for p in per])
            for k in ("spectral_norm", "stable_rank", "alpha")}
