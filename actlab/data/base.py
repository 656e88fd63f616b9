"""The one in-memory form of every dataset, and the standardisation all loaders share.

A Dataset holds standardised float32 inputs and int32 labels for a train and a test split;
a next-token set (task "next_token", actlab.data.text) holds int32 token windows instead,
x and y [N, T], consecutive pieces of one token stream with y one token on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from actlab.errors import UserError


class DataError(UserError):
    """A bad dataset name or parameter (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/test arrays plus what models need to know about them.

    Task "next_token": x_train[i] and y_train[i] are tokens i T .. (i + 1) T - 1 of the
    training stream and the tokens one on (int32 [N, T]; the windows continue each other,
    so batches can be drawn at any offset of the stream: actlab.engine.step.draw_batch);
    num_classes is the vocabulary and meta["tokenizer"] turns text into tokens and back.
    """

    name: str
    x_train: np.ndarray  # float32 [N, *input_shape], standardised with train statistics
    # int32 [N] class labels (float32 ratings in [0, 1] for task 'rating'; int32 [N, T] next
    # tokens for task 'next_token')
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray  # statistics used to standardise (to plot raw inputs)
    std: np.ndarray
    task: str = "classification"  # or "rating", "next_token"
    meta: dict = dataclasses.field(default_factory=dict)  # e.g. num_users, num_items, scale

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def split_standardise(name: str, x: np.ndarray, y: np.ndarray, train_fraction: float,
                      rng: np.random.Generator, per_feature: bool = True,
                      **extra: Any) -> Dataset:
    """Shuffle, split, standardise with train statistics (per feature, or one scalar)."""
    perm = rng.permutation(len(x))
    x, y = x[perm].astype(np.float64), y[perm]
    n_train = int(round(train_fraction * len(x)))
    return standardise(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:], per_feature,
                       **extra)


def standardise(name: str, x_tr, y_tr, x_te, y_te, per_feature: bool = True,
                **extra: Any) -> Dataset:
    """A Dataset with inputs standardised by train statistics."""
    x_tr, x_te = np.asarray(x_tr, np.float64), np.asarray(x_te, np.float64)
    if per_feature:
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    else:
        mean, std = np.asarray(x_tr.mean()), np.asarray(x_tr.std() + 1e-8)
    y_tr, y_te = np.asarray(y_tr), np.asarray(y_te)
    task = extra.pop("task", "classification")
    cast = np.float32 if task == "rating" else np.int32
    num_classes = extra.pop("num_classes", None)
    if num_classes is None:
        num_classes = 1 if task == "rating" else int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(name=name, x_train=((x_tr - mean) / std).astype(np.float32),
                   y_train=y_tr.astype(cast), x_test=((x_te - mean) / std).astype(np.float32),
                   y_test=y_te.astype(cast), num_classes=num_classes,
                   mean=mean.astype(np.float32), std=std.astype(np.float32), task=task,
                   meta=extra)
