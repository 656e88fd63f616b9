"""A small pre-LN Transformer encoder / ViT classifier; its MLP blocks use the activation.

Sequence inputs [T, C] are embedded per position; images [H, W, C] are cut into
patch x patch patches. Layer l is transformer block l (attention and MLP); its
activation site is the MLP's hidden layer.
"""

from __future__ import annotations

import flax.linen as nn

from actlab import init as init_lib
from actlab.activations import Spec
from actlab.models import (
    Model,
    ModelError,
    act_site,
    new_aux,
    positive_int,
    prefix_labels,
    require_sequence_or_image,
)


class Transformer(nn.Module):
    specs: tuple[Spec, ...]
    num_classes: int
    dim: int = 64
    heads: int = 4
    mlp_ratio: int = 2
    patch: int = 4
    init_scheme: tuple = ("glorot", "normal", 1.0)

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
        scheme = init_lib.Scheme(*self.init_scheme)
        h = nn.Dense(self.dim, name="embed")(x)
        h = h + self.param("pos", nn.initializers.normal(0.02), h.shape[1:])
        aux = new_aux()
        for l, sp in enumerate(self.specs):
            y = nn.LayerNorm(name=f"layer{l}_ln1")(h)
            y = nn.MultiHeadDotProductAttention(self.heads, name=f"layer{l}_attn")(y, y)
            h = h + y
            y = nn.LayerNorm(name=f"layer{l}_ln2")(h)
            kinit, binit = scheme.kernel(l), scheme.bias()
            z = nn.Dense(self.dim * self.mlp_ratio, kernel_init=kinit, bias_init=binit,
                         name=f"layer{l}")(y)
            y = act_site(self, l, sp, z, eps, capture, aux)
            h = h + nn.Dense(self.dim, kernel_init=kinit, bias_init=binit,
                             name=f"layer{l}_fc2")(y)
        h = nn.LayerNorm(name="final_ln")(h).mean(1)
        return nn.Dense(self.num_classes, name="out")(h), (aux if capture else None)


def sites(depth=2, dim=64, heads=4, mlp_ratio=2, patch=4):
    positive_int("dim", dim)
    positive_int("heads", heads)
    positive_int("mlp_ratio", mlp_ratio)
    positive_int("patch", patch)
    if dim % heads:
        raise ModelError(f"model.dim ({dim}) must be a multiple of model.heads ({heads})")
    return positive_int("depth", depth)


def build(*, specs, num_classes, input_shape, init, depth=2, dim=64, heads=4, mlp_ratio=2,
          patch=4):
    """A `depth`-block Transformer classifier for sequences or image patches."""
    require_sequence_or_image("transformer", input_shape)
    module = Transformer(specs=tuple(specs), num_classes=num_classes, dim=dim, heads=heads,
                         mlp_ratio=mlp_ratio, patch=patch, init_scheme=tuple(init))
    return Model(module=module, specs=tuple(specs), labels=prefix_labels(len(specs)))
