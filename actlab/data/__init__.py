"""Datasets: one in-memory form for all of them.

A Dataset holds standardised float32 inputs and int32 labels for a train and a
test split. The TensorFlow Playground sets are generated exactly as the
Playground does (labels +1/-1 mapped to 1/0), seeded, with no download.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from actlab.config.validate import reject_unknown
from actlab.errors import UserError


class DataError(UserError):
    """A bad dataset name or parameter (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/test arrays plus what models need to know about them."""

    name: str
    x_train: np.ndarray  # float32 [N, *input_shape], standardised with train statistics
    y_train: np.ndarray  # int32 [N] class labels (float32 ratings in [0, 1] for task 'rating')
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray  # statistics used to standardise (to plot raw inputs)
    std: np.ndarray
    task: str = "classification"  # or "rating"
    meta: dict = dataclasses.field(default_factory=dict)  # e.g. num_users, num_items, scale

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


_LOADERS: dict[str, Callable[..., Dataset]] = {}


def register(name: str):
    """Decorator: register `load(**params) -> Dataset` under `name`."""

    def deco(fn):
        _LOADERS[name] = fn
        return fn

    return deco


def names() -> list[str]:
    """Registered dataset names."""
    return sorted(_LOADERS)


def params_of(name: str) -> dict[str, Any]:
    """Parameters of dataset `name` with their defaults."""
    sig = inspect.signature(_LOADERS[name])
    return {k: p.default for k, p in sig.parameters.items()}


def check(name: str, params: Mapping[str, Any]) -> None:
    """Raise DataError unless `name` is known and `params` are accepted."""
    if name not in _LOADERS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(names())}")
    accepted = params_of(name)
    reject_unknown("dataset", name, params, accepted, DataError)
    if "train_fraction" in accepted:
        frac = params.get("train_fraction", accepted["train_fraction"])
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
            raise DataError(f"dataset.train_fraction must be in (0, 1), got {frac!r}")
    if "num_points" in accepted:
        n = params.get("num_points", accepted["num_points"])
        if isinstance(n, bool) or not isinstance(n, int) or n < 4:
            raise DataError(f"dataset.num_points must be an integer >= 4, got {n!r}")
    if "noise" in accepted:
        noise = params.get("noise", accepted["noise"])
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise DataError(f"dataset.noise must be a number >= 0, got {noise!r}")


def load(name: str, **params: Any) -> Dataset:
    """Load (or generate) dataset `name`; NaN/inf in its inputs is an error."""
    check(name, params)
    ds = _LOADERS[name](**params)
    for split, arr in (("train", ds.x_train), ("test", ds.x_test)):
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        if bad:
            raise DataError(f"dataset '{name}' has {bad} non-finite input values in its "
                            f"{split} split")
    return ds


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


# --------------------------------------------------------------------------- #
# TensorFlow Playground generators (raw coordinates in about [-6, 6]).

def _label01(positive: np.ndarray) -> np.ndarray:
    return positive.astype(np.int32)


def _playground(gen):
    """Register a Playground generator as a loader with the common split parameters."""

    def load_fn(num_points: int = 500, noise: float = 0.0, train_fraction: float = 0.5,
                seed: int = 0) -> Dataset:
        rng = np.random.default_rng(seed)
        x, y = gen(rng, num_points=num_points, noise=noise)
        return split_standardise(gen.__name__, x, y.astype(np.int32), train_fraction, rng)

    load_fn.__doc__ = gen.__doc__
    register(gen.__name__)(load_fn)
    return gen


@_playground
def spiral(rng: np.random.Generator, num_points: int = 500, noise: float = 0.0):
    """Two interleaved spirals: r = 5i/n, t = 1.75*2*pi*i/n + {0, pi}, n points each."""
    n = num_points // 2
    i = np.arange(n)
    r = 5.0 * i / n
    xs, ys = [], []
    for delta, label in ((0.0, 1), (math.pi, 0)):
        t = 1.75 * 2.0 * math.pi * i / n + delta
        px = r * np.sin(t) + rng.uniform(-1.0, 1.0, n) * noise
        py = r * np.cos(t) + rng.uniform(-1.0, 1.0, n) * noise
        xs.append(np.stack([px, py], 1))
        ys.append(np.full(n, label))
    return np.concatenate(xs), np.concatenate(ys)


@_playground
def circle(rng: np.random.Generator, num_points: int = 500, noise: float = 0.0):
    """Class 1 inside radius 2.5, class 0 in the ring 3.5..5; noise moves the labelling point."""
    radius, n = 5.0, num_points // 2
    pts, labels = [], []
    for lo, hi in ((0.0, 0.5 * radius), (0.7 * radius, radius)):
        r = rng.uniform(lo, hi, n)
        angle = rng.uniform(0.0, 2.0 * math.pi, n)
        x, y = r * np.sin(angle), r * np.cos(angle)
        nx = rng.uniform(-radius, radius, n) * noise
        ny = rng.uniform(-radius, radius, n) * noise
        pts.append(np.stack([x, y], 1))
        labels.append(_label01(np.hypot(x + nx, y + ny) < 0.5 * radius))
    return np.concatenate(pts), np.concatenate(labels)


@_playground
def xor(rng: np.random.Generator, num_points: int = 500, noise: float = 0.0):
    """x, y ~ U(-5, 5) pushed 0.3 away from the axes; label sign(x*y)."""
    x = rng.uniform(-5.0, 5.0, num_points)
    y = rng.uniform(-5.0, 5.0, num_points)
    x = x + np.where(x > 0, 0.3, -0.3)
    y = y + np.where(y > 0, 0.3, -0.3)
    nx = rng.uniform(-5.0, 5.0, num_points) * noise
    ny = rng.uniform(-5.0, 5.0, num_points) * noise
    return np.stack([x, y], 1), _label01((x + nx) * (y + ny) >= 0)


@_playground
def gauss(rng: np.random.Generator, num_points: int = 500, noise: float = 0.0):
    """Two Gaussian blobs at (2, 2) (class 1) and (-2, -2); variance 0.5 + 7*noise."""
    n = num_points // 2
    std = math.sqrt(0.5 + 7.0 * noise)
    pos = rng.normal(2.0, std, (n, 2))
    neg = rng.normal(-2.0, std, (n, 2))
    return np.concatenate([pos, neg]), np.concatenate([np.ones(n), np.zeros(n)])


# --------------------------------------------------------------------------- #
# Bundled or generated offline: scikit-learn's moons and digits, MNIST-1D, ratings.

@register("moons")
def moons(num_points: int = 500, noise: float = 0.1, train_fraction: float = 0.5,
          seed: int = 0) -> Dataset:
    """scikit-learn's two interleaving half circles."""
    from sklearn.datasets import make_moons

    rng = np.random.default_rng(seed)
    x, y = make_moons(num_points, noise=noise, random_state=seed)
    return split_standardise("moons", x, y.astype(np.int32), train_fraction, rng)


@register("digits")
def digits(train_fraction: float = 0.8, seed: int = 0, flatten: bool = False) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images[..., None] if not flatten else d.data
    return split_standardise("digits", x, d.target.astype(np.int32), train_fraction,
                             np.random.default_rng(seed), per_feature=False)


@register("mnist1d")
def mnist1d(num_samples: int = 5000, view: str = "flat", seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated locally: 40-step signals, 10 classes.

    view: 'flat' gives [40] vectors (MLP), 'sequence' gives [40, 1] (CNN, Transformer).
    """
    if view not in ("flat", "sequence"):
        raise DataError(f"dataset.view must be flat or sequence, got {view!r}")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    d = make_dataset(args)
    x_tr, x_te = np.asarray(d["x"]), np.asarray(d["x_test"])
    if view == "sequence":
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    return standardise("mnist1d", x_tr, d["y"], x_te, d["y_test"], per_feature=False)


@register("ratings")
def ratings(num_users: int = 200, num_items: int = 100, rank: int = 4, density: float = 0.3,
            noise: float = 0.3, train_fraction: float = 0.8, seed: int = 0) -> Dataset:
    """Synthetic low-rank ratings on a 1..5 scale: r = clip(3 + u.v + noise), scaled to [0, 1].

    Inputs are (user, item) index pairs; the recommender model is the one that fits.
    """
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1, (num_users, rank)) / np.sqrt(rank)
    v = rng.normal(0, 1, (num_items, rank))
    mask = rng.random((num_users, num_items)) < density
    users, items = np.nonzero(mask)
    r = np.clip(np.round(3 + (u[users] * v[items]).sum(1) + rng.normal(0, noise, len(users))),
                1, 5)
    x = np.stack([users, items], 1)
    perm = rng.permutation(len(x))
    x, y = x[perm], (r[perm] - 1) / 4
    n_train = int(round(train_fraction * len(x)))
    return Dataset(name="ratings", x_train=x[:n_train].astype(np.float32),
                   y_train=y[:n_train].astype(np.float32), x_test=x[n_train:].astype(np.float32),
                   y_test=y[n_train:].astype(np.float32), num_classes=1,
                   mean=np.zeros(2, np.float32), std=np.ones(2, np.float32), task="rating",
                   meta={"num_users": num_users, "num_items": num_items, "scale": 4.0})


from actlab.data import tfds as data_tfds  # noqa: E402,F401  (registers the tensorflow-datasets loaders)
