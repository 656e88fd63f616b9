"""Probes that cost more than the per-layer metrics, run on their own interval.

All take a loss over the fixed probe batch as a function of the parameters
(evaluation mode: no dropout, batch-norm running statistics), so successive
measurements of one run are comparable. All are pure and jittable, and work under
jax.vmap over ensemble members and inside lax.cond.

H is the Hessian of the probe-batch loss with respect to the flattened parameter
vector theta (n entries). H v is a Hessian-vector product, forward-over-reverse
(jax.jvp of jax.grad), never forming H. Krylov methods are matfree's: Lanczos
with full reorthogonalisation (as Arnoldi, `matfree.decomp.hessenberg`; see `lanczos`),
Rademacher probes (`matfree.stochtrace.sampler_signs`) and the Hutchinson
trace-and-diagonal integrand (`matfree.stochtrace.monte_carlo_trace_and_diagonal`).

- `hessian_top_eig`, `hessian_eigs`: the largest (algebraic) eigenvalues of H, the
  Ritz values of `iters` Lanczos steps from a Gaussian vector. The top one is the
  sharpness that bounds stable step sizes: gradient descent with rate eta is
  unstable along directions with lambda > 2 / eta ("edge of stability", Cohen et
  al. 2021).
- `hessian_trace`: Hutchinson's estimate of tr(H) from Rademacher probes z,
  mean of z'Hz, with its standard error; per layer, the trace of the diagonal block
  H_ll from the same probes (sum over layer l's entries of z * Hz).
- `hessian_slq`: stochastic Lanczos quadrature of the spectral density of H.
- `hessian_layer_top_eig`: the largest eigenvalue of each diagonal block H_ll.
- `noise_scale`: the simple gradient-noise scale of McCandlish et al. (2018),
  B_simple = tr(Sigma) / |G|^2, from per-example gradients g_i of B examples:
  tr(Sigma) ~ B/(B-1) (mean_i |g_i|^2 - |g_B|^2) and |G|^2 ~ |g_B|^2 - tr(Sigma)/B
  (both unbiased). Batches much smaller than B_simple waste little compute per
  example; much larger ones give diminishing returns.
- `gsnr`: the gradient signal-to-noise ratio of Liu et al. (2020) per parameter,
  averaged per layer.

Layers are given as masks (`layer_masks`): pytrees shaped like the parameters,
1 where an entry belongs to layer l. The block of layer l is H_ll = P_l H P_l with
P_l = diag(mask_l), an operator on all n entries whose nonzero spectrum is that of
d^2 loss / d theta_l^2.

Cost in Hessian-vector products (each about two forward and two backward passes
of the probe batch): hessian_top_eig / hessian_eigs: iters; hessian_trace:
samples (all layers together); hessian_slq: samples * iters;
hessian_layer_top_eig: L * iters. gsnr and noise_scale: one backward pass per
probe example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.flatten_util import ravel_pytree
from matfree import decomp, stochtrace

from actlab.models import Model
from actlab.models.base import PyTree

_Moments = tuple[jax.Array, jax.Array, jax.Array]  # count, mean, sum of squared deviations


def _vdot(a: PyTree, b: PyTree) -> jax.Array:
    return cast(jax.Array, sum(jnp.vdot(x, y) for x, y in zip(  # parameters have leaves
        jax.tree.leaves(a), jax.tree.leaves(b), strict=True)))


# ---------------------------------------------------------------------------------------
# Hessian-vector products, Lanczos and its Ritz values


def flat_hvp(loss: Callable, params: PyTree) -> tuple[jax.Array, Callable]:
    """(theta, v -> H v) for the flattened parameter vector theta (forward-over-reverse)."""
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda f: loss(unravel(f)))

    def hvp(v: jax.Array) -> jax.Array:
        return jax.jvp(grad, (flat,), (v,))[1]

    return flat, hvp


def flat_masks(masks: Sequence[PyTree], params: PyTree) -> jax.Array:
    """Layer masks as a [L, n] array in the order of ravel_pytree(params), params' dtype."""
    rows = [ravel_pytree(jax.tree.map(lambda m, p: jnp.asarray(m, p.dtype), m, params))[0]
            for m in masks]
    return jnp.stack(rows)


def lanczos(matvec: Callable, v0: jax.Array, iters: int) -> tuple[jax.Array, jax.Array]:
    """Diagonal alpha [m] and off-diagonal beta [m - 1] of m = min(iters, n) Lanczos steps.

    Lanczos with full reorthogonalisation is Arnoldi on a symmetric operator:
    `matfree.decomp.hessenberg(m, reortho="full")` gives Q'AQ = H, tridiagonal up to
    rounding; alpha is its diagonal and beta its subdiagonal, the norms of the
    orthogonalised residuals. (`matfree.decomp.tridiag_sym` returns the same
    factorisation symmetrised, (H + H')/2, whose off-diagonal no longer shows a
    breakdown; `ritz` needs it.)
    """
    m = min(iters, v0.shape[0])
    arnoldi = decomp.hessenberg(m, reortho="full", custom_vjp=False)
    h = arnoldi(matvec, v0).J_small
    return jnp.diagonal(h), jnp.diagonal(h, -1)


def ritz(alpha: jax.Array, beta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Ritz values (ascending), quadrature weights and validity of a Lanczos matrix T.

    T is tridiagonal with diagonal alpha [m] and off-diagonal beta [m - 1]. A Krylov
    space exhausted after k < m steps (the start vector lies in an invariant subspace,
    e.g. a zero or low-rank block) shows as a residual at rounding level,
    beta_j <= 10 eps max_{i<=j} (|alpha_i| + beta_i) (eps of the dtype: 1.2e-6 relative
    in float32). Normalising such a residual gives a vector that is not orthogonal to
    the others, and the entries after it are meaningless, so only the leading k x k
    block is kept; its eigenvalues are eigenvalues of the operator. (A small but
    genuine beta, e.g. a narrow bulk next to large outliers, is kept.) The other m - k
    nodes are reported as 0 with weight 0 and valid = False. Weights are the squared first
    components of the eigenvectors of T (they sum to 1). Non-finite input gives NaN.
    """
    m = alpha.shape[0]
    tol = 10 * jnp.finfo(alpha.dtype).eps
    scale = jax.lax.cummax(jnp.abs(alpha[:-1]) + jnp.abs(beta))
    ok = jnp.abs(beta) > tol * scale  # False for NaN: stop there
    keep = jnp.concatenate([jnp.ones((1,), bool), jnp.cumprod(ok).astype(bool)])
    count = jnp.sum(keep)
    a = jnp.where(keep, alpha, 0.0)
    b = jnp.where(keep[1:], beta, 0.0)
    bound = jnp.max(jnp.abs(a)) + 2 * jnp.max(jnp.abs(b), initial=0.0)
    fill = -(2 * bound + 1)  # below every eigenvalue of the kept block (Gershgorin)
    t = jnp.diag(jnp.where(keep, a, fill)) + jnp.diag(b, 1) + jnp.diag(b, -1)
    nodes, vecs = jnp.linalg.eigh(t)
    valid = jnp.arange(m) >= m - count  # the fill values sort first
    nan = jnp.where(jnp.isfinite(alpha[0]), 0.0, jnp.nan)  # NaN in, NaN out
    return (jnp.where(valid, nodes, 0.0) + nan, jnp.where(valid, vecs[0] ** 2, 0.0) + nan, valid)


def _top(alpha: jax.Array, beta: jax.Array, k: int) -> jax.Array:
    """The k largest Ritz values, descending; NaN past the valid ones."""
    nodes, _, valid = ritz(alpha, beta)
    out = jnp.where(valid, nodes, jnp.nan)[::-1]
    if k > out.shape[0]:
        out = jnp.concatenate([out, jnp.full((k - out.shape[0],), jnp.nan, out.dtype)])
    return out[:k]


def _gaussian(key: jax.Array, like: jax.Array) -> jax.Array:
    return jax.random.normal(key, like.shape, like.dtype)


# ---------------------------------------------------------------------------------------
# Whole-network curvature


def hessian_eigs(loss: Callable, params: PyTree, key: jax.Array, k: int = 1,
                 iters: int = 20) -> dict[str, jax.Array]:
    """hessian/eig_<i>, i < k: the k largest (algebraic) eigenvalues of H, descending.

    They are the largest Ritz values of min(iters, n) Lanczos steps with full
    reorthogonalisation from a Gaussian start vector (iters Hessian-vector products).
    The top ones converge first; take iters well above k (k + 10 or more). NaN for
    i at or beyond the dimension of the Krylov space. hessian/top_eig = hessian/eig_0.
    """
    flat, hvp = flat_hvp(loss, params)
    top = _top(*lanczos(hvp, _gaussian(key, flat), iters), k)
    return {"hessian/top_eig": top[0], **{f"hessian/eig_{i}": top[i] for i in range(k)}}


def hessian_top_eig(loss: Callable, params: PyTree, key: jax.Array,
                    iters: int = 20) -> jax.Array:
    """The largest (algebraic) eigenvalue of H: the top Ritz value of `iters` Lanczos steps."""
    return hessian_eigs(loss, params, key, 1, iters)["hessian/top_eig"]


def hessian_trace(loss: Callable, params: PyTree, key: jax.Array, samples: int = 16,
                  masks: Sequence[PyTree] | None = None,
                  batch: int = 1) -> dict[str, jax.Array]:
    """Hutchinson's estimate of tr(H) and, with layer masks, of each block's tr(H_ll).

    With Rademacher probes z_s (s < samples, entries +-1 with equal probability):
    hessian/trace = mean_s z_s'H z_s and hessian/trace_se = std_s(z_s'H z_s) / sqrt(samples)
    (std with ddof = 1: NaN for one sample). Per layer, hessian/trace_layer [L] =
    mean_s sum_{j in l} (z_s)_j (H z_s)_j, the Hutchinson diagonal estimate summed over
    the layer's entries: unbiased for tr(H_ll), since E[z_i z_j] = 0 for i != j; its
    variance also holds the layer's off-block couplings. hessian/trace_se_layer [L] is
    its standard error. `samples` Hessian-vector products in all, `batch` at a time.
    """
    flat, hvp = flat_hvp(loss, params)
    sample = stochtrace.sampler_signs(flat, num=1)
    integrand = stochtrace.monte_carlo_trace_and_diagonal()

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = integrand(hvp, sample(k)[0])
        return out["trace"], out["diagonal"]

    traces, diags = jax.lax.map(one, jax.random.split(key, samples), batch_size=batch)
    se = lambda a: jnp.std(a, axis=0, ddof=1) / jnp.sqrt(samples)  # noqa: E731
    out = {"hessian/trace": jnp.mean(traces), "hessian/trace_se": se(traces)}
    if masks is not None:
        per = diags @ flat_masks(masks, params).T  # [samples, L]
        out["hessian/trace_layer"] = jnp.mean(per, axis=0)
        out["hessian/trace_se_layer"] = se(per)
    return out


def hessian_slq(loss: Callable, params: PyTree, key: jax.Array, samples: int = 4,
                iters: int = 30,
                batch: int = 1) -> dict[str, jax.Array]:
    """Stochastic Lanczos quadrature of the spectral density of H.

    For each of `samples` Rademacher vectors v_s, m = min(iters, n) Lanczos steps from
    v_s give T_s = U diag(theta) U'; its Ritz values theta_sk are the nodes
    (hessian/slq_nodes, [samples, m], ascending per row) and w_sk = U_0k^2 the
    weights (hessian/slq_weights, [samples, m], each row summing to 1), so that
    v_s'f(H)v_s / n ~ sum_k w_sk f(theta_sk), exactly for polynomials of degree < 2m.
    Hence the spectral measure (1/n) sum_i delta(lambda - lambda_i) of H is estimated by
    (1/samples) sum_sk w_sk delta(lambda - theta_sk), and the moments by
    sum_sk w_sk theta_sk^p / samples ~ tr(H^p) / n (unbiased for p < 2m); `density`
    smooths it. Nodes past an exhausted Krylov space are 0 with weight 0.
    samples * iters Hessian-vector products, `batch` vectors at a time.
    """
    flat, hvp = flat_hvp(loss, params)
    sample = stochtrace.sampler_signs(flat, num=1)

    def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
        nodes, weights, _ = ritz(*lanczos(hvp, sample(k)[0], iters))
        return nodes, weights

    nodes, weights = jax.lax.map(one, jax.random.split(key, samples), batch_size=batch)
    return {"hessian/slq_nodes": nodes, "hessian/slq_weights": weights}


def density(nodes: npt.ArrayLike, weights: npt.ArrayLike, grid: npt.ArrayLike,
            sigma: float) -> np.ndarray:
    """Gaussian-smoothed SLQ spectral density on `grid` (numpy, for plots).

    rho(t) = (1/S) sum_{s,k} w_sk N(t; theta_sk, sigma^2) for nodes and weights [S, m]
    (or [..., S, m]: leading axes are kept, e.g. steps). It integrates to 1: the
    estimated eigenvalue density of H per unit eigenvalue, as a fraction of n.
    """
    nodes = np.asarray(nodes, np.float64)
    weights = np.asarray(weights, np.float64)
    grid = np.asarray(grid, np.float64)
    z = (grid - nodes[..., None]) / sigma  # [..., S, m, G]
    g = np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))
    return np.sum(weights[..., None] * g, axis=(-3, -2)) / nodes.shape[-2]


# ---------------------------------------------------------------------------------------
# Per-layer curvature


def layer_masks(model: Model, params: PyTree, out: bool = False) -> list[PyTree]:
    """One 0/1 pytree per layer l < model.num_layers: 1 where an entry is layer l's weight.

    Layer l's weights are the parameters labelled Role("layer", l) (kernel and bias
    producing z_l; not activation parameters, normalisation or the output layer). For a
    stacked array (leading axis over layers role.layer, role.layer + 1, ...) the mask
    selects row l - role.layer. With out=True a last mask selects the output layer.
    `model` is an actlab.models.Model (its labels and num_layers are read); `params`
    are one member's (no leading member axis); arrays or shape structs do. Returns
    float32 jnp arrays built from zeros and ones, so that called inside a traced
    function they are cheap broadcasts, not constants of the program.
    """
    roles = jax.tree.leaves(model.labels(params))  # Roles are leaves (not pytree nodes)
    leaves, treedef = jax.tree.flatten(params)

    def mask(select: Callable[[Any, tuple], jax.Array]) -> PyTree:
        return jax.tree.unflatten(treedef, [select(r, tuple(x.shape))
                                            for r, x in zip(roles, leaves, strict=True)])

    def of_layer(l: int) -> Callable[[Any, tuple], jax.Array]:
        def select(role: Any, shape: tuple) -> jax.Array:  # role: a models.Role
            if role.group == "layer" and role.stacked and 0 <= l - role.layer < shape[0]:
                return jnp.zeros(shape, jnp.float32).at[l - role.layer].set(1)
            if role.group == "layer" and not role.stacked and role.layer == l:
                return jnp.ones(shape, jnp.float32)
            return jnp.zeros(shape, jnp.float32)
        return select

    masks = [mask(of_layer(l)) for l in range(model.num_layers)]
    if out:
        masks.append(mask(lambda role, shape: jnp.full(shape, role.group == "out", jnp.float32)))
    return masks


def hessian_layer_top_eig(loss: Callable, params: PyTree, key: jax.Array, masks: Sequence[PyTree],
                          iters: int = 20) -> dict[str, jax.Array]:
    """hessian/top_eig_layer [L]: the largest eigenvalue of each diagonal block H_ll.

    Lanczos (min(iters, n) steps, full reorthogonalisation) on v -> P_l H (P_l v) from
    P_l g, g Gaussian, so the Krylov space stays inside layer l's entries. A block with
    fewer entries than iters, or a zero block (a dead layer), exhausts its Krylov space
    early; the Ritz values found by then are exact. L * iters Hessian-vector products,
    one layer at a time.
    """
    flat, hvp = flat_hvp(loss, params)
    fm = flat_masks(masks, params)

    def one(args: tuple[jax.Array, jax.Array]) -> jax.Array:
        m, k = args
        ab = lanczos(lambda v: m * hvp(m * v), m * _gaussian(k, flat), iters)
        return _top(*ab, 1)[0]

    keys = jax.random.split(key, fm.shape[0])
    return {"hessian/top_eig_layer": jax.lax.map(one, (fm, keys))}


# ---------------------------------------------------------------------------------------
# Gradient noise


def noise_scale(example_loss: Callable, params: PyTree, x: jax.Array, y: jax.Array,
                chunk: int = 64) -> dict[str, jax.Array]:
    """B_simple and its two parts from per-example gradients of `example_loss(params, x_i, y_i)`.

    Per-example gradients are computed `chunk` examples at a time (jax.lax.map),
    so memory stays at chunk x parameters whatever the probe batch size.
    """
    b = x.shape[0]
    grad1 = jax.grad(example_loss)

    def sq(xy: tuple[jax.Array, jax.Array]) -> jax.Array:
        g = grad1(params, xy[0][None], xy[1][None])
        return _vdot(g, g)

    per_example_sq = jax.lax.map(sq, (x, y), batch_size=min(chunk, b))
    g_mean = jax.grad(lambda p: example_loss(p, x, y))(params)
    mean_sq = _vdot(g_mean, g_mean)
    trace_cov = b / max(b - 1, 1) * (jnp.mean(per_example_sq) - mean_sq)
    grad_sq = mean_sq - trace_cov / b
    return {"noise_scale/b_simple": trace_cov / grad_sq, "noise_scale/trace_cov": trace_cov,
            "noise_scale/grad_sq": grad_sq}


def gradient_moments(example_loss: Callable, params: PyTree, x: jax.Array, y: jax.Array,
                     chunk: int = 64) -> tuple[jax.Array, jax.Array]:
    """Mean and variance (ddof = 0) over examples of the flat per-example gradients.

    g_i = d example_loss(params, x_i, y_i) / d theta for the B examples of (x, y), one
    chunk of `chunk` examples at a time (memory chunk x n); chunks are merged with
    Chan et al.'s pairwise update of (count, mean, sum of squared deviations), which
    keeps the variance accurate where it is small against the squared mean.
    """
    b = x.shape[0]
    c = min(chunk, b)
    flat, unravel = ravel_pytree(params)
    grad1 = jax.grad(lambda f, xi, yi: example_loss(unravel(f), xi[None], yi[None]))
    grads = jax.vmap(grad1, in_axes=(None, 0, 0))

    def stats(xs: jax.Array, ys: jax.Array) -> tuple[jax.Array, jax.Array]:
        g = grads(flat, xs, ys)
        mean = jnp.mean(g, axis=0)
        return mean, jnp.sum(jnp.square(g - mean), axis=0)

    def merge(acc: _Moments, new: _Moments) -> _Moments:
        (na, ma, sa), (nb, mb, sb) = acc, new
        n = na + nb
        d = mb - ma
        return n, ma + d * (nb / n), sa + sb + d * d * (na * nb / n)

    q, r = divmod(b, c)
    xs = x[:q * c].reshape(q, c, *x.shape[1:])
    ys = y[:q * c].reshape(q, c, *y.shape[1:])
    first = (jnp.asarray(c, flat.dtype), *stats(xs[0], ys[0]))

    def body(acc: _Moments, xy: tuple[jax.Array, jax.Array]) -> tuple[_Moments, None]:
        return merge(acc, (jnp.asarray(c, flat.dtype), *stats(*xy))), None

    acc, _ = jax.lax.scan(body, first, (xs[1:], ys[1:]))
    if r:
        acc = merge(acc, (jnp.asarray(r, flat.dtype), *stats(x[q * c:], y[q * c:])))
    _, mean, ssd = acc
    return mean, ssd / b


def gsnr(example_loss: Callable, params: PyTree, x: jax.Array, y: jax.Array,
         masks: Sequence[PyTree],
         chunk: int = 64, eps: float = 1e-5) -> dict[str, jax.Array]:
    """Gradient signal-to-noise ratio (Liu et al. 2020), per layer and over all parameters.

    Per parameter j, over the per-example gradients g_ij of the B probe examples:
    r_j = mean_i(g_ij)^2 / (var_i(g_ij) + eps), var with ddof = 0, i.e.
    mean_i(g_ij^2) - mean_i(g_ij)^2 (cockpit's MeanGSNR, epsilon 1e-5 by default, so
    a parameter with zero gradient variance counts mean^2 / eps, and one with no
    gradient at all counts 0). gsnr_layer [L] is the mean of r_j over layer l's
    entries (mask-weighted); gsnr_mean the mean over all parameters (cockpit's
    MeanGSNR). Per-example gradients `chunk` at a time (`gradient_moments`).
    """
    mean, var = gradient_moments(example_loss, params, x, y, chunk)
    r = jnp.square(mean) / (var + eps)
    fm = flat_masks(masks, params)
    return {"gsnr_layer": (fm @ r) / jnp.sum(fm, axis=1), "gsnr_mean": jnp.mean(r)}
