"""What today's FFN-activation research measures in Transformers, per block (pure jnp).

On the probe batch, for the models that capture a residual stream (model=transformer,
model=gpt), with h_l block l's MLP activation output [P, T, U] (every token an example),
x_l the residual stream after block l [P, T, D], and A_l block l's attention logits
[P, heads, T, T] (after every scale; a causal model's mask says which keys a query sees):

- ffn_sparsity: the fraction of (token, unit) entries of h_l with |h| <= 1e-6 max|h_l|
  (exactly the zeros for the relu family); ffn_lazy: the fraction of units with such an
  entry on every token of every probe example (Li et al. 2023's lazy neurons). A layer whose
  outputs are all zero is wholly sparse and lazy.
- outlier_kurtosis: with s_i the RMS of x_l's channel i over examples and tokens, the
  kurtosis mean(s^4) / mean(s^2)^2 (He et al. 2024: 1 when every channel has the same size,
  the number of channels when one channel holds everything).
- massive_ratio: max |x_l| / median |x_l| over every entry (Sun et al. 2024), and
  massive_pos the position (token index) of the largest |x_l|, the first in row-major
  order on ties.
- attn_entropy: -sum_k p_k log p_k of each query's attention distribution p =
  softmax(A_l) over the keys it sees, in nats, averaged over examples, heads and queries.
- token_cosine: the mean over examples of the mean cosine between distinct positions'
  x_l (Noci et al. 2022's rank collapse: 1 when every token carries the same direction); a
  position whose vector is zero counts 0; NaN for one-token windows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import jax
import jax.numpy as jnp

SPARSE_REL = 1e-6
FAMILIES = ("ffn_sparsity", "outlier_kurtosis", "massive_ratio", "attn_entropy", "token_cosine")


def ffn_sparsity(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sparsity, lazy fraction) of one layer's activation output [P, ..., U]."""
    a_NxU = jnp.abs(h.astype(jnp.float32)).reshape(-1, h.shape[-1])
    zero = a_NxU <= SPARSE_REL * jnp.max(a_NxU)
    return jnp.mean(zero), jnp.mean(jnp.all(zero, axis=0))


def outlier_kurtosis(x: jax.Array) -> jax.Array:
    """mean(s^4) / mean(s^2)^2 of the per-channel RMS s over examples and tokens."""
    s2_D = jnp.mean(jnp.square(x.astype(jnp.float32)).reshape(-1, x.shape[-1]), axis=0)
    m2 = jnp.mean(s2_D)
    return jnp.mean(jnp.square(s2_D)) / jnp.where(m2 > 0, jnp.square(m2), 1.0)


def massive(x_PxTxD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(max |x| / median |x|, the token position of the max) of a residual stream."""
    a = jnp.abs(x_PxTxD.astype(jnp.float32))
    med = jnp.median(a)
    ratio = jnp.max(a) / jnp.where(med > 0, med, jnp.nan)
    _, t, _ = jnp.unravel_index(jnp.argmax(a), a.shape)
    return ratio, t.astype(jnp.float32)


def attn_entropy(logits_PxNxTxT: jax.Array, mask_TxT: jax.Array | None = None) -> jax.Array:
    """Mean entropy (nats) of the attention distributions over the keys each query sees."""
    a = logits_PxNxTxT.astype(jnp.float32)
    if mask_TxT is not None:
        a = jnp.where(mask_TxT, a, -jnp.inf)
    logp = jax.nn.log_softmax(a, axis=-1)
    p = jnp.exp(logp)
    ent = -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)
    return jnp.mean(ent)


def attn_logits_rms(logits_PxNxTxT: jax.Array, mask_TxT: jax.Array | None = None) -> jax.Array:
    """RMS of the attention logits over the (query, key) pairs that attend."""
    sq = jnp.square(logits_PxNxTxT.astype(jnp.float32))
    if mask_TxT is None:
        return jnp.sqrt(jnp.mean(sq))
    w = jnp.broadcast_to(mask_TxT, sq.shape).astype(jnp.float32)
    return jnp.sqrt(jnp.sum(sq * w) / jnp.sum(w))


def token_cosine(x_PxTxD: jax.Array) -> jax.Array:
    """Mean pairwise cosine between distinct positions, averaged over examples."""
    x = x_PxTxD.astype(jnp.float32)
    t = x.shape[1]
    n_PxT = jnp.sqrt(jnp.sum(jnp.square(x), -1))
    u = x / jnp.where(n_PxT > 0, n_PxT, 1.0)[..., None]  # zero rows stay zero
    s_P = jnp.sum(jnp.square(jnp.sum(u, 1)), -1) - jnp.sum(n_PxT > 0, -1)  # off-diagonal sum
    return jnp.mean(s_P) / (t * (t - 1)) if t > 1 else jnp.float32(jnp.nan)


def transformer_metrics(aux: dict[str, list], selected: Collection[str]
                        ) -> dict[str, jax.Array]:
    """The selected families per block ([L] each), from a model's captures: h (activation
    outputs), resid (the residual stream after each block), attn_logits and, for a causal
    model, attn_mask. Nothing for models without a residual stream."""
    resid: Sequence[jax.Array] = aux.get("resid") or ()
    if not resid:
        return {}
    out: dict[str, jax.Array] = {}
    if "ffn_sparsity" in selected:
        both = [ffn_sparsity(h) for h in aux["h"]]
        out["ffn_sparsity"] = jnp.stack([s for s, _ in both])
        out["ffn_lazy"] = jnp.stack([z for _, z in both])
    if "outlier_kurtosis" in selected:
        out["outlier_kurtosis"] = jnp.stack([outlier_kurtosis(x) for x in resid])
    if "massive_ratio" in selected:
        both = [massive(x) for x in resid]
        out["massive_ratio"] = jnp.stack([r for r, _ in both])
        out["massive_pos"] = jnp.stack([p for _, p in both])
    if "token_cosine" in selected:
        out["token_cosine"] = jnp.stack([token_cosine(x) for x in resid])
    logits = aux.get("attn_logits") or ()
    if "attn_entropy" in selected and logits:
        mask = (aux.get("attn_mask") or [None])[0]
        out["attn_entropy"] = jnp.stack([attn_entropy(a, mask) for a in logits])
    return out
