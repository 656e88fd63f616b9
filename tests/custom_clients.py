"""Model factories for model=custom in the tests, written the way a user writes a model
(plain linen, no actlab labels), plus actlab's own modules behind a logits-only wrapper."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import nnx

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


class FunctionsMLP(nn.Module):
    """Nonlinearities spelled as a model's author might: a mish written out, a clip to
    [0, 3] (no registered function) and a softmax (not elementwise)."""

    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        z = nn.Dense(12)(x)
        x = z * jnp.tanh(jnp.logaddexp(z, 0.0))
        x = jnp.clip(nn.Dense(12)(x), 0.0, 3.0)
        x = nn.softmax(nn.Dense(12)(x))
        return nn.Dense(self.num_classes)(x)


def functions_mlp(input_shape, num_classes):
    return FunctionsMLP(num_classes=num_classes)


class NnxMLP(nnx.Module):
    """An nnx MLP as the nnx guide writes one: relu called as a function, gelu (nnx's, the
    tanh form) stored as an attribute."""

    def __init__(self, din, width, num_classes, *, rngs):
        self.fc1 = nnx.Linear(din, width, rngs=rngs)
        self.fc2 = nnx.Linear(width, width, rngs=rngs)
        self.head = nnx.Linear(width, num_classes, rngs=rngs)
        self.act = nnx.gelu

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(x))
        return self.head(self.act(self.fc2(x)))


def nnx_mlp(input_shape, num_classes, width=12, *, rngs):
    return NnxMLP(int(np.prod(input_shape)), width, num_classes, rngs=rngs)


class NnxNormDrop(nnx.Module):
    """nnx BatchNorm (running statistics: state) and Dropout (its own rng stream)."""

    def __init__(self, din, num_classes, *, rngs):
        self.fc = nnx.Linear(din, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.head = nnx.Linear(16, num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.drop(nnx.relu(self.bn(self.fc(x.reshape(x.shape[0], -1)))))
        return self.head(x)


def nnx_norm_drop(input_shape, num_classes, *, rngs):
    return NnxNormDrop(int(np.prod(input_shape)), num_classes, rngs=rngs)
