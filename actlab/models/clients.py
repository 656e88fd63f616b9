"""Factories for model=custom that hand over other projects' Flax models unmodified
(`pip install "actlab[clients]"`; nothing is downloaded, weights are drawn at random).

    actlab-train model=custom model.target=actlab.models.clients:resnet18 dataset=digits \\
      model.train_flag=train

Each is `factory(input_shape, num_classes, **kwargs)` -> a linen Module x -> logits; where a
model's own call takes more than x (token ids, masks) or returns an output object, a thin
wrapper supplies the rest and returns the logits; the model's modules are its own.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from flax import nnx


def resnet18(input_shape, num_classes, normalize=False):
    """flaxmodels' ResNet18 (its own BatchNorm; `nn.relu` called as a function), random
    weights; `model.train_flag=train`."""
    from flaxmodels import ResNet18

    return ResNet18(output="logits", pretrained=None, num_classes=num_classes,
                    normalize=normalize)


class _TokensOf(nn.Module):
    """A transformers Flax module on inputs quantised to `vocab` token ids per position."""

    inner: nn.Module
    vocab: int

    def __call__(self, x, deterministic: bool = True):
        x = x.reshape(x.shape[0], -1)
        lo, hi = jnp.min(x), jnp.max(x)
        ids = jnp.clip(((x - lo) / jnp.maximum(hi - lo, 1e-6) * self.vocab).astype(jnp.int32),
                       0, self.vocab - 1)
        ones, zeros = jnp.ones_like(ids), jnp.zeros_like(ids)
        positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
        return self.inner(ids, ones, zeros, positions, None, deterministic=deterministic,
                          return_dict=False)[0]


def bert(input_shape, num_classes, hidden=32, layers=2, heads=2, intermediate=64, vocab=16,
         dropout=0.1):
    """transformers' FlaxBertForSequenceClassification module (its GELU an ACT2FN partial
    stored on the module, its pooler's `nn.tanh`), every input value a token;
    `model.train_flag=!deterministic`."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_flax_bert import (
        FlaxBertForSequenceClassificationModule,
    )

    length = int(jnp.prod(jnp.asarray(input_shape)))
    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=intermediate,
                     num_labels=num_classes, max_position_embeddings=max(length, 8),
                     type_vocab_size=1, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    return _TokensOf(inner=FlaxBertForSequenceClassificationModule(cfg), vocab=vocab)


class _LinenMLP(nn.Module):
    depth: int
    width: int
    num_classes: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.num_classes)(x)


def linen_mlp(input_shape, num_classes, depth=8, width=64):
    """A plain linen MLP (Dense, then `nn.relu` called as a function; name the sites
    `{'Dense_*': relu}`), as a Flax tutorial writes one: the built-in MLP's twin for the
    cost of watching (benchmark figure 14)."""
    return _LinenMLP(depth=depth, width=width, num_classes=num_classes)


def mamba2(input_shape, num_classes, d_model=32, layers=2, d_state=16, headdim=8, chunk=8, *,
           rngs):
    """mamba2-jax's Mamba2Forecaster (nnx: nnx.Linear projections, a depthwise nnx.Conv,
    its silu an attribute), reading the input's rows as a sequence (digits: 8 steps of 8
    values; mnist1d: 40 steps of 1) and forecasting one step of `num_classes` values, the
    logits; weights drawn from `rngs` (per seed)."""
    from mamba2_jax import Mamba2Forecaster

    steps = int(input_shape[0])
    features = int(np.prod(input_shape[1:], dtype=int)) if len(input_shape) > 1 else 1
    inner = Mamba2Forecaster(features, d_model, layers, num_classes, 1, d_state, headdim, 4,
                             chunk, rngs=rngs)
    return _LastStep(inner, steps, features)


class _LastStep(nnx.Module):
    """x [B, *input_shape] -> the forecaster's one-step output [B, classes]."""

    def __init__(self, inner, steps, features):
        self.inner, self.steps, self.features = inner, steps, features

    def __call__(self, x):
        return self.inner(x.reshape(x.shape[0], self.steps, self.features))[:, 0, :]
