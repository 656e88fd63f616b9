"""A small pre-LN Transformer encoder / ViT classifier; its MLP blocks use the activation.

Sequence inputs [T, C] are embedded per position; images [H, W, C] are cut into
patch x patch patches. Layer l is transformer block l (attention and MLP); its
activation site is the MLP's hidden layer. `norm` is layer norm (pre-LN), DyT
(Zhu et al. 2025: gamma tanh(alpha x) + beta in place of each layer norm) or none.
A gated unit (GLU family) makes the MLP h = gate(x W) * (x V), W and V fused in one
[dim, 2U] kernel; glu_width=match takes U with the MLP's parameter count of the
elementwise block (U = H (2 dim + 1) / (3 dim + 2), Shazeer's 2/3 H up to biases).

Width parametrizations (model.param, actlab.models.param) take dim as the width n and
m = dim / base_width, with the heads fixed (head width d = dim / heads grows with m):
the embedding is the input layer, the attention projections and both MLP kernels are
hidden (matrix-like), the classifier is the output layer, biases, positions and norm
scales are vector-like. Under mup the attention logits are q.k sqrt(d_base) / d (Tensor
Programs V's 1/d, written to equal sp's 1/sqrt(d) at base_width); under ntk every product
is divided by sqrt(fan_in) and the logits keep 1/sqrt(d). With capture, the attention
logits of each block ([B, heads, T, T], after the scale) are kept as aux["attn_logits"]
and the residual stream after each block ([B, T, dim]) as aux["resid"]
(actlab.measure.transformer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    require_sequence_or_image,
)

NORMS = ("layer", "dyt", "none")


class Transformer(nn.Module):
    specs: tuple[Spec, ...]
    num_classes: int
    dim: int = 64
    heads: int = 4
    mlp_ratio: int = 2
    patch: int = 4
    init_scheme: tuple = ("glorot", "normal", 1.0)
    hidden: int = 0  # MLP units (0: mlp_ratio * dim)
    norm: str = "layer"
    dyt_alpha0: float = 0.5
    # width parametrization (actlab.models.param): sp | mup | ntk, and muP's reference dim
    parametrization: str = "sp"
    base_width: int = 64

    def normalise(self, name: str):
        if self.norm == "layer":
            return nn.LayerNorm(name=name)
        if self.norm == "dyt":
            return DyT(self.dyt_alpha0, name=name)
        return lambda x: x

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim == 4:  # images -> patches
            b, hh, ww, c = x.shape
            p = self.patch
            x = x[:, : hh // p * p, : ww // p * p]
            x = x.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 2, 4, 5)
            x = x.reshape(b, (hh // p) * (ww // p), p * p * c)
        scheme = initializers.Scheme(*self.init_scheme)
        pz, m = self.parametrization, self.dim / self.base_width
        units = self.hidden or self.dim * self.mlp_ratio
        lecun = nn.initializers.lecun_normal()  # flax's own kernel initializer

        def dense(features: int, kind: str, fan_in: int, name: str, init: Callable = lecun,
                  **kw: Any) -> nn.Dense:
            return nn.Dense(features, name=name, **kw,
                            kernel_init=param_lib.scaled(init, param_lib.init_scale(
                                pz, kind, fan_in, m)),
                            dot_general=scaled_dot(param_lib.multiplier(pz, kind, fan_in, m)))

        h = dense(self.dim, "input", x.shape[-1], "embed")(x)
        h = h + self.param("pos", nn.initializers.normal(0.02), h.shape[1:])
        aux = new_aux()
        gated = is_gated(self.specs)
        hidden_init = param_lib.scaled(lecun, param_lib.init_scale(pz, "hidden", self.dim, m))
        hidden_dot = scaled_dot(param_lib.multiplier(pz, "hidden", self.dim, m))
        logit_scale = 1.0 / math.sqrt(m) if pz == "mup" else 1.0  # on top of 1/sqrt(d)
        for l, sp in enumerate(self.specs):
            y = self.normalise(f"layer{l}_ln1")(h)
            y = nn.MultiHeadDotProductAttention(
                self.heads, name=f"layer{l}_attn", kernel_init=hidden_init,
                qkv_dot_general=hidden_dot, out_dot_general=hidden_dot,
                attention_fn=attention(logit_scale, aux if capture else None))(y, y)
            h = h + y
            y = self.normalise(f"layer{l}_ln2")(h)
            kinit, binit = scheme.kernel(l), scheme.bias()
            z = dense(2 * units if gated else units, "hidden", self.dim, f"layer{l}",
                      paired(kinit) if gated else kinit, bias_init=binit)(y)
            y = act_site(self, l, sp, z, eps, capture, aux)
            h = h + dense(self.dim, "hidden", units, f"layer{l}_fc2", kinit,
                          bias_init=binit)(y)
            if capture:
                aux.setdefault("resid", []).append(h)
        h = self.normalise("final_ln")(h).mean(1)
        out = dense(self.num_classes, "output", self.dim, "out")(h)
        return out, (aux if capture else None)


def scaled_dot(c: float) -> Callable | None:
    """A Dense layer's product x.W times the parametrization's multiplier `c` (None: flax's
    own, when c is 1, so sp is unchanged)."""
    if c == 1.0:
        return None

    def dot(*args: Any, **kw: Any) -> jax.Array:
        return jax.lax.dot_general(*args, **kw) * c

    return dot


def attention(scale: float, aux: dict[str, list] | None) -> Callable:
    """Flax's dot-product attention with the query multiplied by `scale` (1: flax's own
    function), keeping each call's attention logits q.k (after every scale) in
    aux["attn_logits"] when aux is given."""
    if scale == 1.0 and aux is None:
        return nn.dot_product_attention

    def fn(query: jax.Array, key: jax.Array, value: jax.Array, **kw: Any) -> jax.Array:
        if scale != 1.0:
            query = query * scale
        if aux is not None:
            logits = jnp.einsum("...qhd,...khd->...hqk", query, key) / math.sqrt(query.shape[-1])
            aux.setdefault("attn_logits", []).append(logits)
        return nn.dot_product_attention(query, key, value, **kw)

    return fn


def sites(depth=2, dim=64, heads=4, mlp_ratio=2, patch=4, norm="layer", glu_width="match",
          dyt_alpha0=0.5, param="sp", base_width=64):
    choice("param", param, param_lib.PARAMS)
    positive_int("base_width", base_width)
    positive_int("dim", dim)
    positive_int("heads", heads)
    positive_int("mlp_ratio", mlp_ratio)
    positive_int("patch", patch)
    choice("norm", norm, NORMS)
    choice("glu_width", glu_width, GLU_WIDTHS)
    if isinstance(dyt_alpha0, bool) or not isinstance(dyt_alpha0, (int, float)):
        raise ModelError(f"model.dyt_alpha0 must be a number, got {dyt_alpha0!r}")
    if dim % heads:
        raise ModelError(f"model.dim ({dim}) must be a multiple of model.heads ({heads})")
    return positive_int("depth", depth)


def mlp_params(units: int, dim: int, gated: bool) -> int:
    """Parameters of one block's MLP with `units` hidden units (kernels and biases)."""
    cols = 2 * units if gated else units
    return dim * cols + cols + units * dim + dim


def build(*, specs, num_classes, input_shape, init, depth=2, dim=64, heads=4, mlp_ratio=2,
          patch=4, norm="layer", glu_width="match", dyt_alpha0=0.5, param="sp", base_width=64):
    """A `depth`-block Transformer classifier for sequences or image patches, under width
    parametrization `param` with reference width `base_width` (models.param)."""
    require_sequence_or_image("transformer", input_shape)
    hidden = dim * mlp_ratio
    if is_gated(tuple(specs)) and glu_width == "match":
        hidden = matched_units(lambda u: mlp_params(u, dim, True), mlp_params(hidden, dim, False),
                               hidden)
    module = Transformer(specs=tuple(specs), num_classes=num_classes, dim=dim, heads=heads,
                         mlp_ratio=mlp_ratio, patch=patch, init_scheme=tuple(init),
                         hidden=hidden, norm=norm, dyt_alpha0=float(dyt_alpha0),
                         parametrization=param, base_width=int(base_width))
    lr_factor = None if param == "sp" else param_lib.lr_factors(param, dim / base_width, kind)
    return Model(module=module, specs=tuple(specs), labels=prefix_labels(len(specs)),
                 lr_factor=lr_factor)


def kind(role: Role) -> str:
    """The parametrization's kind of a Transformer parameter (models.param.KINDS): block
    kernels (attention and MLP) are hidden, the embedding kernel the input, the classifier's
    kernel the output; positions, biases and norm scales are vector-like, learned scalars
    (activation parameters, DyT's alpha) and the classifier's bias have no width dimension."""
    if role.param is not None or role.group == "act":
        return "fixed"
    if role.group == "out":
        return "output" if role.kernel else "fixed"
    if role.group == "layer":
        return "hidden" if role.kernel else "vector"
    return "input" if role.kernel else "vector"  # embed kernel; pos, embed bias, final norm

