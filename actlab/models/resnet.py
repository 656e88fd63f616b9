"""A small ResNet (ResNet-20 style: 3 stages of `blocks` basic blocks, channels doubling).

Activation placement is either the original post-activation design
(conv-BN-phi-conv-BN, add, phi; He et al. 2016a) or the pre-activation design
(BN-phi-conv-BN-phi-conv, add; final BN-phi; He et al. 2016b). Both have
1 + 6*blocks activation sites (19 for ResNet-20). Layer l's weights are the
conv (with its batch norm) whose output feeds activation l: the stem is layer 0,
block k's convolutions are layers 2k+1 and 2k+2.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from actlab.models import initializers
from actlab.models.base import (
    Model,
    ModelError,
    act_site,
    new_aux,
    positive_int,
    prefix_labels,
    require_sequence_or_image,
)

STAGES = 3


class ResNet(nn.Module):
    specs: tuple
    num_classes: int
    blocks: int = 3
    channels: int = 16
    preact: bool = False
    init_scheme: tuple = ("he", "normal", 1.0)

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        if x.ndim == 2:
            x = x[..., None]
        scheme = initializers.Scheme(*self.init_scheme)  # convolutions only: they have no bias
        k = (3,) * (x.ndim - 2)
        aux = new_aux()

        def conv(h, ch, stride, name, l):
            return nn.Conv(ch, k, strides=stride, padding="SAME", use_bias=False,
                           kernel_init=scheme.kernel(l), name=name)(h)

        def bn(h, name):
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)(h)

        def act(l, z):
            return act_site(self, l, self.specs[l], z, eps, capture, aux)

        h = conv(x, self.channels, 1, "layer0", 0)
        if not self.preact:
            h = act(0, bn(h, "layer0_bn"))
        n = 0  # blocks so far
        for stage in range(STAGES):
            ch = self.channels * 2**stage
            for b in range(self.blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                l1, l2 = 2 * n + 1, 2 * n + 2
                if self.preact:
                    y = act(2 * n, bn(h, f"layer{2 * n}_bnpre"))
                    shortcut = y if (stride != 1 or h.shape[-1] != ch) else h
                    y = conv(y, ch, stride, f"layer{l1}", l1)
                    y = act(l1, bn(y, f"layer{l1}_bn"))
                    y = conv(y, ch, 1, f"layer{l2}", l2)
                else:
                    shortcut = h
                    y = act(l1, bn(conv(h, ch, stride, f"layer{l1}", l1), f"layer{l1}_bn"))
                    y = bn(conv(y, ch, 1, f"layer{l2}", l2), f"layer{l2}_bn")
                if shortcut.shape != y.shape:
                    shortcut = conv(shortcut, ch, stride, f"proj{n}", l1)
                h = shortcut + y
                if not self.preact:
                    h = act(l2, h)
                n += 1
        if self.preact:
            h = act(2 * n, bn(h, f"layer{2 * n}_bnpre"))
        h = jnp.mean(h, axis=tuple(range(1, h.ndim - 1)))
        return nn.Dense(self.num_classes, name="out")(h), (aux if capture else None)


def sites(blocks=3, channels=16, preact=False):
    positive_int("blocks", blocks)
    positive_int("channels", channels)
    if not isinstance(preact, bool):
        raise ModelError(f"model.preact must be true or false, got {preact!r}")
    return 1 + 2 * STAGES * blocks


def build(*, specs, num_classes, input_shape, init, blocks=3, channels=16, preact=False):
    """ResNet-(6*blocks+2): post- or pre-activation residual blocks."""
    require_sequence_or_image("resnet", input_shape)
    module = ResNet(specs=tuple(specs), num_classes=num_classes, blocks=blocks,
                    channels=channels, preact=preact, init_scheme=tuple(init))
    return Model(module=module, specs=tuple(specs), labels=prefix_labels(len(specs)))
