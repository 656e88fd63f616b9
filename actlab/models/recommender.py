"""The embedding recommender: user and item embeddings, concatenated, an MLP, one sigmoid unit.

Inputs are integer pairs (user, item); the output logit goes through a sigmoid
to a rating in [0, 1] (the dataset's ratings are scaled to that range).
"""

from __future__ import annotations

from typing import cast

import flax.linen as nn
import jax.numpy as jnp

from actlab.activations import Spec
from actlab.models import initializers
from actlab.models.base import (
    Model,
    ModelError,
    act_site,
    fraction,
    new_aux,
    positive_int,
    prefix_labels,
)


class Recommender(nn.Module):
    specs: tuple[Spec, ...]
    num_users: int
    num_items: int
    n_factors: int = 16
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    init_scheme: tuple = ("he", "normal", 1.0)

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        x = x.astype(jnp.int32)
        u = nn.Embed(self.num_users, self.n_factors, name="user_embedding")(x[:, 0])
        i = nn.Embed(self.num_items, self.n_factors, name="item_embedding")(x[:, 1])
        h = jnp.concatenate([u, i], -1)
        scheme = initializers.Scheme(*self.init_scheme)
        aux = new_aux()
        for l, (sp, width) in enumerate(zip(self.specs, self.hidden, strict=True)):
            z = nn.Dense(width, kernel_init=scheme.kernel(l), bias_init=scheme.bias(),
                         name=f"layer{l}")(h)
            h = act_site(self, l, sp, z, eps, capture, aux)
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(1, name="out")(h), (aux if capture else None)


def sites(n_factors=16, hidden=(64, 32), dropout=0.2):
    positive_int("n_factors", n_factors)
    if isinstance(hidden, (str, int)) or not hidden:
        raise ModelError(f"model.hidden must be a non-empty list of widths, got {hidden!r}")
    for w in hidden:
        positive_int("hidden", w)
    fraction("dropout", dropout)
    return len(hidden)


def build(*, specs, num_classes, input_shape, init, n_factors=16, hidden=(64, 32), dropout=0.2,
          num_users: int | None = None, num_items: int | None = None):
    """The recommender for a ratings dataset with `num_users` x `num_items`."""
    if tuple(input_shape) != (2,) or num_users is None:
        raise ModelError("model 'recommender' needs a ratings dataset of (user, item) pairs "
                         "(dataset=ratings or dataset=movielens)")
    module = Recommender(specs=tuple(specs), num_users=num_users,
                         num_items=cast(int, num_items),  # ratings datasets give both
                         n_factors=n_factors, hidden=tuple(hidden), dropout=dropout,
                         init_scheme=tuple(init))
    return Model(module=module, specs=tuple(specs), labels=prefix_labels(len(specs)))


