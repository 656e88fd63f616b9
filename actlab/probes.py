"""Probes that cost more than the per-layer metrics, run on their own interval.

Both take a loss over the fixed probe batch as a function of the parameters
(evaluation mode: no dropout, batch-norm running statistics), so successive
measurements of one run are comparable.

- `hessian_top_eig`: the eigenvalue of largest magnitude of the loss Hessian,
  by power iteration on Hessian-vector products (forward-over-reverse, never
  forming the Hessian). It is the sharpness that bounds stable step sizes:
  gradient descent with rate eta is unstable along directions with
  lambda > 2 / eta ("edge of stability", Cohen et al. 2021).
- `noise_scale`: the simple gradient-noise scale of McCandlish et al. (2018),
  B_simple = tr(Sigma) / |G|^2, from per-example gradients g_i of B examples:
  tr(Sigma) ~ B/(B-1) (mean_i |g_i|^2 - |g_B|^2) and |G|^2 ~ |g_B|^2 - tr(Sigma)/B
  (both unbiased). Batches much smaller than B_simple waste little compute per
  example; much larger ones give diminishing returns.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _vdot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                              strict=True))


def hessian_top_eig(loss: Callable, params, key: jax.Array, iters: int = 20) -> jax.Array:
    """Rayleigh quotient v'Hv after `iters` power iterations from a random unit vector."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    v = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                     for k, x in zip(keys, leaves, strict=True)])

    def hvp(v):
        return jax.jvp(jax.grad(loss), (params,), (v,))[1]

    def normalise(v):
        n = jnp.sqrt(_vdot(v, v))
        return jax.tree.map(lambda x: x / jnp.maximum(n, 1e-30), v)

    def body(_, v):
        return normalise(hvp(v))

    v = jax.lax.fori_loop(0, iters, body, normalise(v))
    return _vdot(v, hvp(v))


def noise_scale(example_loss: Callable, params, x: jax.Array, y: jax.Array,
                chunk: int = 64) -> dict[str, jax.Array]:
    """B_simple and its two parts from per-example gradients of `example_loss(params, x_i, y_i)`.

    Per-example gradients are computed `chunk` examples at a time (jax.lax.map),
    so memory stays at chunk x parameters whatever the probe batch size.
    """
    b = x.shape[0]
    grad1 = jax.grad(example_loss)

    def sq(xy):
        g = grad1(params, xy[0][None], xy[1][None])
        return _vdot(g, g)

    per_example_sq = jax.lax.map(sq, (x, y), batch_size=min(chunk, b))
    g_mean = jax.grad(lambda p: example_loss(p, x, y))(params)
    mean_sq = _vdot(g_mean, g_mean)
    trace_cov = b / max(b - 1, 1) * (jnp.mean(per_example_sq) - mean_sq)
    grad_sq = mean_sq - trace_cov / b
    return {"noise_scale/b_simple": trace_cov / grad_sq, "noise_scale/trace_cov": trace_cov,
            "noise_scale/grad_sq": grad_sq}
