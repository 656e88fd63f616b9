"""A causal decoder (GPT) for next-token prediction; its MLP blocks use the activation.

Token windows [B, T] are embedded (a learned table of `vocab` rows) and, with
pos=learned, added to a learned table of `context` positions; with pos=rope, queries and
keys are rotated by their position instead (RoFormer's rotary embedding, the half-split
form of GPT-NeoX). Then `depth` pre-norm blocks, x + attn(norm(x)) and x + mlp(norm(x)),
a final norm and the output embedding give logits [B, T, vocab]; position t attends to
positions <= t only, so logit t depends on tokens 0..t alone. `norm` is layer norm, RMS
norm or DyT (Zhu et al. 2025). The output embedding is the token table itself (tie=true,
as GPT-2) or a matrix of its own.

Layer l is block l; its activation site is the MLP's hidden layer, so every per-layer
metric reads block l's MLP activation (z_l = norm(x) W_l + b_l, a [B, T, U] array of
which every token is an example); with capture, each block's attention logits, the causal
mask and the residual stream after the block are kept too (actlab.measure.transformer).
A gated unit (GLU family) makes the MLP h = gate(x W) * (x V), W and V fused in one
[dim, 2U] kernel; glu_width=match takes U with the MLP's parameter count of the
elementwise block (Shazeer's 2/3 mlp_ratio dim up to biases), glu_width=same keeps
U = mlp_ratio dim.

Initialisation as GPT-2 and nanoGPT: every kernel and embedding N(0, 0.02^2), biases
zero, norms at identity, and the two projections that write into the residual stream
(attention output, MLP output) N(0, (0.02 / sqrt(2 depth))^2), so the stream's variance
at init does not grow with depth. `init.gain` multiplies every one of these standard
deviations; the scheme's name has no effect, and variances the scheme would set
(init=critical, init.sigma_w2, init.sigma_b2) are refused.

Width parametrizations (model.param=sp|mup, actlab.models.param) take dim as the width and
m = dim / base_width, heads fixed. GPT-2's 0.02 is read as the base width's 1/fan_in
scale, so under mup the hidden kernels (query, key, value, attention output, both MLP
kernels) start at 0.02 / sqrt(m) (their residual ones at that over sqrt(2 depth)) and
learn at 1/m under Adam, the token table and positions keep 0.02 (input, vector-like),
the logits are divided by m (microsoft/mup's MuSharedReadout with tie, MuReadout without:
the untied readout's sqrt(m) on 0.02 / sqrt(m) leaves 0.02), and the attention logits are
q.k sqrt(d_base) / d. ntk is not offered: GPT-2's initialisation has no fan-in to divide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from actlab.activations import Spec
from actlab.models import initializers
from actlab.models import param as param_lib
from actlab.models.base import (
    GLU_WIDTHS,
    DyT,
    Model,
    ModelError,
    Role,
    act_site,
    choice,
    is_gated,
    matched_units,
    new_aux,
    paired,
    positive_int,
    prefix_labels,
)
from actlab.models.transformer import kind, mlp_params

NORMS = ("layer", "rms", "dyt")
POSITIONS = ("learned", "rope")
STD = 0.02  # GPT-2's standard deviation of every weight


def rotary(x_BxTxNxD: jax.Array, base: float = 10000.0) -> jax.Array:
    """Rotary position embedding of queries or keys [B, T, heads, D] (D even): channel pair
    (i, i + D/2) at position t rotated by the angle t / base^(2i / D)."""
    t, d = x_BxTxNxD.shape[1], x_BxTxNxD.shape[-1]
    freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2.0 / d)
    angle_TxH = jnp.arange(t, dtype=jnp.float32)[:, None] * freq[None, :]
    cos = jnp.cos(angle_TxH)[None, :, None, :].astype(x_BxTxNxD.dtype)
    sin = jnp.sin(angle_TxH)[None, :, None, :].astype(x_BxTxNxD.dtype)
    x1, x2 = x_BxTxNxD[..., : d // 2], x_BxTxNxD[..., d // 2:]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def causal_attention(q_BxTxNxD: jax.Array, k_BxTxNxD: jax.Array, v_BxTxNxD: jax.Array,
                     scale: float = 1.0, aux: dict[str, list] | None = None) -> jax.Array:
    """softmax(q k^T scale / sqrt(D) + causal mask) v per head: query t sees keys 0..t.

    The logits and their softmax are float32 whatever the compute dtype. With `aux`, the
    logits [B, heads, T, T] (before the mask) join aux["attn_logits"] and the mask [T, T]
    (True where a query sees the key) is aux["attn_mask"].
    """
    t, d = q_BxTxNxD.shape[1], q_BxTxNxD.shape[-1]
    logits = jnp.einsum("bqnd,bknd->bnqk", q_BxTxNxD, k_BxTxNxD).astype(jnp.float32)
    logits = logits / math.sqrt(d)
    if scale != 1.0:
        logits = logits * scale
    mask_TxT = jnp.tril(jnp.ones((t, t), bool))
    if aux is not None:
        aux.setdefault("attn_logits", []).append(logits)
        aux["attn_mask"] = [mask_TxT]
    logits = jnp.where(mask_TxT, logits, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(logits, -1).astype(v_BxTxNxD.dtype)
    return jnp.einsum("bnqk,bknd->bqnd", p, v_BxTxNxD)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: query, key and value projections (dim x dim each),
    optional rotary positions, and the output projection into the residual stream."""

    dim: int
    heads: int
    rope: bool
    std: float
    out_std: float
    logit_scale: float = 1.0  # on top of 1/sqrt(head width): mup's 1/sqrt(m)

    @nn.compact
    def __call__(self, x_BxTxC: jax.Array, aux: dict[str, list] | None = None) -> jax.Array:
        b, t, _ = x_BxTxC.shape
        d = self.dim // self.heads

        def project(name: str) -> jax.Array:
            y = nn.Dense(self.dim, kernel_init=nn.initializers.normal(self.std), name=name)(
                x_BxTxC)
            return y.reshape(b, t, self.heads, d)

        q, k, v = project("query"), project("key"), project("value")
        if self.rope:
            q, k = rotary(q), rotary(k)
        y = causal_attention(q, k, v, self.logit_scale, aux).reshape(b, t, self.dim)
        return nn.Dense(self.dim, kernel_init=nn.initializers.normal(self.out_std),
                        name="out")(y)


class GPT(nn.Module):
    """The decoder of the module docstring: one block per spec, logits [B, T, vocab]."""

    specs: tuple[Spec, ...]
    vocab: int
    context: int
    dim: int = 64
    heads: int = 4
    hidden: int = 128  # MLP units
    pos: str = "learned"
    norm: str = "layer"
    tie: bool = True
    gain: float = 1.0
    dyt_alpha0: float = 0.5
    parametrization: str = "sp"  # sp | mup (module docstring), muP's reference dim below
    base_width: int = 64

    def normalise(self, name: str) -> Callable[[jax.Array], jax.Array]:
        if self.norm == "layer":
            return nn.LayerNorm(epsilon=1e-5, name=name)
        if self.norm == "rms":
            return nn.RMSNorm(epsilon=1e-6, name=name)
        return DyT(self.dyt_alpha0, name=name)

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        tokens_BxT = x.astype(jnp.int32)
        mup, m = self.parametrization == "mup", self.dim / self.base_width
        std = STD * self.gain  # the token table, positions and readout
        hid = std / math.sqrt(m) if mup else std  # 0.02 as the base width's 1/fan_in scale
        out_std = hid / math.sqrt(2 * len(self.specs))
        normal = nn.initializers.normal
        embed = nn.Embed(self.vocab, self.dim, embedding_init=normal(std), name="embed")
        h = embed(tokens_BxT)
        if self.pos == "learned":
            h = h + self.param("pos", normal(std), (self.context, self.dim))[: x.shape[1]]
        aux = new_aux()
        gated = is_gated(self.specs)
        for l, sp in enumerate(self.specs):
            y = self.normalise(f"layer{l}_ln1")(h)
            h = h + CausalSelfAttention(self.dim, self.heads, self.pos == "rope", hid, out_std,
                                        1 / math.sqrt(m) if mup else 1.0,
                                        name=f"layer{l}_attn")(y, aux if capture else None)
            y = self.normalise(f"layer{l}_ln2")(h)
            z = nn.Dense(2 * self.hidden if gated else self.hidden,
                         kernel_init=paired(normal(hid)) if gated else normal(hid),
                         name=f"layer{l}")(y)
            y = act_site(self, l, sp, z, eps, capture, aux)
            h = h + nn.Dense(self.dim, kernel_init=normal(out_std), name=f"layer{l}_fc2")(y)
            if capture:
                aux.setdefault("resid", []).append(h)
        h = self.normalise("final_ln")(h)
        if self.tie:
            logits = embed.attend(h)
        else:
            logits = nn.Dense(self.vocab, use_bias=False, kernel_init=normal(std), name="out")(h)
        if mup and m != 1.0:
            logits = logits / m
        return logits, (aux if capture else None)


def sites(depth=2, dim=64, heads=4, mlp_ratio=4, context=None, pos="learned", norm="layer",
          tie=True, glu_width="match", dyt_alpha0=0.5, param="sp", base_width=64):
    """Validate the parameters (one-line ModelError); one activation site per block."""
    if param == "ntk":
        raise ModelError("model=gpt takes model.param=sp|mup: GPT-2's initialisation "
                         "(N(0, 0.02^2)) has no fan-in for ntk to divide")
    choice("param", param, param_lib.PARAMS)
    positive_int("base_width", base_width)
    positive_int("dim", dim)
    positive_int("heads", heads)
    positive_int("mlp_ratio", mlp_ratio)
    if context is not None:
        positive_int("context", context)
    choice("pos", pos, POSITIONS)
    choice("norm", norm, NORMS)
    choice("glu_width", glu_width, GLU_WIDTHS)
    if not isinstance(tie, bool):
        raise ModelError(f"model.tie must be true or false, got {tie!r}")
    if isinstance(dyt_alpha0, bool) or not isinstance(dyt_alpha0, (int, float)):
        raise ModelError(f"model.dyt_alpha0 must be a number, got {dyt_alpha0!r}")
    if dim % heads:
        raise ModelError(f"model.dim ({dim}) must be a multiple of model.heads ({heads})")
    if pos == "rope" and (dim // heads) % 2:
        raise ModelError(f"model.pos=rope rotates channel pairs: the head width model.dim / "
                         f"model.heads = {dim // heads} must be even")
    return positive_int("depth", depth)


def labels(num_layers: int, tie: bool) -> Callable[[Mapping[str, Any]], Any]:
    """Block l's parameters form layer l (prefix_labels); the output layer is the untied
    output matrix, or with tie the token table that serves as input and output."""
    by_prefix = prefix_labels(num_layers)

    def fn(tree: Mapping[str, Any]) -> Any:
        roles = dict(by_prefix(tree))
        if tie:
            roles["embed"] = jax.tree.map(lambda _: Role("out", kernel=True), roles["embed"],
                                          is_leaf=lambda r: isinstance(r, Role))
        return roles

    return fn


def _check_init(scheme: initializers.Scheme) -> None:
    if scheme.name == "critical" or scheme.sigma_w2 is not None or scheme.sigma_b2:
        raise ModelError("model=gpt draws GPT-2's initialisation (N(0, 0.02^2), residual "
                         "projections scaled by 1/sqrt(2 depth)); init=critical, "
                         "init.sigma_w2 and init.sigma_b2 do not apply (init.gain scales it)")
    if scheme.distribution != "normal":
        raise ModelError(f"model=gpt draws normal weights (GPT-2's initialisation); "
                         f"init.distribution={scheme.distribution} does not apply")


def build(*, specs, num_classes, input_shape, init, depth=2, dim=64, heads=4, mlp_ratio=4,
          context=None, pos="learned", norm="layer", tie=True, glu_width="match",
          dyt_alpha0=0.5, param="sp", base_width=64):
    """A `depth`-block causal decoder over a vocabulary of `num_classes` tokens; `context`
    positions (None: the dataset's window length)."""
    if len(input_shape) != 1:
        raise ModelError(f"model 'gpt' reads token windows [T]; this dataset's inputs have "
                         f"shape {tuple(input_shape)} (use dataset=text)")
    window = int(input_shape[0])
    context = window if context is None else int(context)
    if context < window:
        raise ModelError(f"model.context ({context}) is shorter than the dataset's windows "
                         f"(dataset.context = {window})")
    scheme = initializers.Scheme(*init)
    _check_init(scheme)
    hidden = dim * mlp_ratio
    if is_gated(tuple(specs)) and glu_width == "match":
        hidden = matched_units(lambda u: mlp_params(u, dim, True), mlp_params(hidden, dim, False),
                               hidden)
    module = GPT(specs=tuple(specs), vocab=num_classes, context=context, dim=dim, heads=heads,
                 hidden=hidden, pos=pos, norm=norm, tie=bool(tie), gain=float(scheme.gain),
                 dyt_alpha0=float(dyt_alpha0), parametrization=param,
                 base_width=int(base_width))
    lr_factor = None if param == "sp" else param_lib.lr_factors(param, dim / base_width, kind)
    return Model(module=module, specs=tuple(specs), labels=labels(len(specs), bool(tie)),
                 lr_factor=lr_factor)


def generate(model: Model, params: Any, model_state: Any, prompt: np.ndarray, steps: int,
             temperature: float = 0.0, key: jax.Array | None = None) -> np.ndarray:
    """`steps` tokens continuing `prompt` (int [P], P >= 1): the argmax of each next-token
    distribution (temperature 0), or a draw from softmax(logits / temperature).

    The model reads the last `context` tokens; they sit in a buffer of that fixed length
    (later positions padded, which causality hides), so one compiled loop makes every token.
    """
    module = model.module
    if not isinstance(module, GPT):
        raise ModelError("generate needs a causal model (model=gpt)")
    prompt = np.asarray(prompt, np.int32).reshape(-1)[-module.context:]
    if prompt.size == 0:
        raise ModelError("the prompt holds no token")
    if temperature < 0:
        raise ModelError(f"temperature must be >= 0, got {temperature}")
    buf = np.zeros((1, module.context), np.int32)
    buf[0, :prompt.size] = prompt
    key = jax.random.PRNGKey(0) if key is None else key
    context = module.context

    def body(i: jax.Array, carry: tuple) -> tuple:
        buf_1xT, n, out = carry
        logits_V = model.apply(params, model_state, buf_1xT)[0][0, n - 1]
        if temperature == 0:
            token = jnp.argmax(logits_V).astype(jnp.int32)
        else:
            token = jax.random.categorical(jax.random.fold_in(key, i),
                                           logits_V / temperature).astype(jnp.int32)
        full = n == context  # the window is full: its first token drops out
        buf_1xT = jnp.where(full, jnp.roll(buf_1xT, -1, 1).at[0, -1].set(token),
                            buf_1xT.at[0, jnp.minimum(n, context - 1)].set(token))
        return buf_1xT, jnp.minimum(n + 1, context), out.at[i].set(token)

    @jax.jit
    def loop(buf_1xT: jax.Array, n: jax.Array) -> jax.Array:
        return jax.lax.fori_loop(0, steps, body, (buf_1xT, n, jnp.zeros((steps,), jnp.int32)))[2]

    return np.asarray(loop(jnp.asarray(buf), jnp.asarray(prompt.size, jnp.int32)))
