"""A small pre-LN Transformer encoder / ViT classifier; its MLP blocks use the activation.

Sequence inputs [T, C] are embedded per position; images [H, W, C] are cut into
patch x patch patches. Layer l is transformer block l (attention and MLP); its
activation site is the MLP's hidden layer. `norm` is layer norm (pre-LN), DyT
(Zhu et al. 2025: gamma tanh(alpha x) + beta in place of each layer norm) or none.
A gated unit (GLU family) makes the MLP h = gate(x W) * (x V), W and V fused in one
[dim, 2U] kernel; glu_width=match takes U with the MLP's parameter count of the
elementwise block (U = H (2 dim + 1) / (3 dim + 2), Shazeer's 2/3 H up to biases).
"""

from __future__ import annotations

import flax.linen as nn

from actlab.activations import Spec
from actlab.models import initializers
from actlab.models.base import (
    GLU_WIDTHS,
    DyT,
    Model,
    ModelError,
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
        h = nn.Dense(self.dim, name="embed")(x)
        h = h + self.param("pos", nn.initializers.normal(0.02), h.shape[1:])
        aux = new_aux()
        gated = is_gated(self.specs)
        units = self.hidden or self.dim * self.mlp_ratio
        for l, sp in enumerate(self.specs):
            y = self.normalise(f"layer{l}_ln1")(h)
            y = nn.MultiHeadDotProductAttention(self.heads, name=f"layer{l}_attn")(y, y)
            h = h + y
            y = self.normalise(f"layer{l}_ln2")(h)
            kinit, binit = scheme.kernel(l), scheme.bias()
            z = nn.Dense(2 * units if gated else units,
                         kernel_init=paired(kinit) if gated else kinit, bias_init=binit,
                         name=f"layer{l}")(y)
            y = act_site(self, l, sp, z, eps, capture, aux)
            h = h + nn.Dense(self.dim, kernel_init=kinit, bias_init=binit,
                             name=f"layer{l}_fc2")(y)
        h = self.normalise("final_ln")(h).mean(1)
        return nn.Dense(self.num_classes, name="out")(h), (aux if capture else None)


def sites(depth=2, dim=64, heads=4, mlp_ratio=2, patch=4, norm="layer", glu_width="match",
          dyt_alpha0=0.5):
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
          patch=4, norm="layer", glu_width="match", dyt_alpha0=0.5):
    """A `depth`-block Transformer classifier for sequences or image patches."""
    require_sequence_or_image("transformer", input_shape)
    hidden = dim * mlp_ratio
    if is_gated(tuple(specs)) and glu_width == "match":
        hidden = matched_units(lambda u: mlp_params(u, dim, True), mlp_params(hidden, dim, False),
                               hidden)
    module = Transformer(specs=tuple(specs), num_classes=num_classes, dim=dim, heads=heads,
                         mlp_ratio=mlp_ratio, patch=patch, init_scheme=tuple(init),
                         hidden=hidden, norm=norm, dyt_alpha0=float(dyt_alpha0))
    return Model(module=module, specs=tuple(specs), labels=prefix_labels(len(specs)))
