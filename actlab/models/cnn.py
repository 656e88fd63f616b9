"""Plain conv net: depth blocks of conv -> norm -> phi -> pool, global average pool, dense.

1-D convolutions for sequence inputs [T, C], 2-D for images [H, W, C]. Metrics
treat each channel as a unit: a channel is dead if phi'(z) = 0 at every
position of every probe example.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from actlab.activations import Spec
from actlab.models import initializers
from actlab.models.base import (
    Model,
    act_site,
    choice,
    new_aux,
    positive_int,
    prefix_labels,
    require_sequence_or_image,
)


class CNN(nn.Module):
    specs: tuple[Spec, ...]
    num_classes: int
    channels: int = 32
    kernel_size: int = 3
    stride: int = 1
    pool: str = "max"  # none | max | avg
    norm: str = "none"  # none | batch | layer
    init_scheme: tuple = ("he", "normal", 1.0)

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        if x.ndim == 2:  # a flat vector is a 1-channel sequence
            x = x[..., None]
        spatial = x.ndim - 2
        scheme = initializers.Scheme(*self.init_scheme)
        aux = new_aux()
        h = x
        for l, sp in enumerate(self.specs):
            z = nn.Conv(self.channels, (self.kernel_size,) * spatial, strides=self.stride,
                        padding="SAME", kernel_init=scheme.kernel(l), bias_init=scheme.bias(),
                        name=f"layer{l}")(h)
            if self.norm == "batch":
                z = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"norm{l}")(z)
            elif self.norm == "layer":
                z = nn.LayerNorm(name=f"norm{l}")(z)
            h = act_site(self, l, sp, z, eps, capture, aux)
            if self.pool != "none" and min(h.shape[1:-1]) >= 2:
                fn = nn.max_pool if self.pool == "max" else nn.avg_pool
                h = fn(h, (2,) * spatial, strides=(2,) * spatial)
        h = jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
        logits = nn.Dense(self.num_classes, name="out")(h)
        return logits, (aux if capture else None)


def sites(depth=3, channels=32, kernel_size=3, stride=1, pool="max", norm="none"):
    positive_int("channels", channels)
    positive_int("kernel_size", kernel_size)
    positive_int("stride", stride)
    choice("pool", pool, ("none", "max", "avg"))
    choice("norm", norm, ("none", "batch", "layer"))
    return positive_int("depth", depth)


def build(*, specs, num_classes, input_shape, init, depth=3, channels=32, kernel_size=3,
          stride=1, pool="max", norm="none"):
    """A 1-D (sequence) or 2-D (image) conv net with `depth` conv blocks."""
    require_sequence_or_image("cnn", input_shape)
    module = CNN(specs=tuple(specs), num_classes=num_classes, channels=channels,
                 kernel_size=kernel_size, stride=stride, pool=pool, norm=norm,
                 init_scheme=tuple(init))
    return Model(module=module, specs=tuple(specs), labels=prefix_labels(len(specs)))
