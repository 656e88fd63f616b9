"""Model factories for model=custom in the tests, written the way a user writes a model
(plain linen, no actlab labels), plus actlab's own modules behind a logits-only wrapper."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from actlab import activations, models


class PlainMLP(nn.Module):
    """Dense -> relu (a function call) -> Dense -> tanh -> Dense, as in any Flax tutorial."""

    width: int
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.width)(x))
        x = jnp.tanh(nn.Dense(self.width)(x))
        return nn.Dense(self.num_classes)(x)


def mlp(input_shape, num_classes, width=16):
    return PlainMLP(width=width, num_classes=num_classes)


class DropoutMLP(nn.Module):
    """A module that needs a `deterministic` flag (dropout) and keeps batch statistics."""

    num_classes: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = nn.BatchNorm(use_running_average=deterministic)(x)
        x = nn.Dropout(0.1, deterministic=deterministic)(nn.gelu(x))
        return nn.Dense(self.num_classes)(x)


def dropout_mlp(input_shape, num_classes):
    return DropoutMLP(num_classes=num_classes)


class Logits(nn.Module):
    """One of actlab's modules with its protocol hidden: x -> logits."""

    inner: nn.Module

    def __call__(self, x):
        return self.inner(x)[0]


def builtin(input_shape, num_classes, name="cnn", activations_=("relu",), **params):
    """actlab's model `name` as a plain module (its labels, captures and eps left behind)."""
    specs = tuple(activations.spec(a) for a in activations_)
    model = models.build(name, specs=specs, num_classes=num_classes,
                         input_shape=tuple(input_shape), **params)
    return Logits(inner=model.module)


def not_a_module(input_shape, num_classes):
    return lambda x: x


def wrong_classes(input_shape, num_classes):
    return PlainMLP(width=4, num_classes=num_classes + 1)
