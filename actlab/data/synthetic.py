"""Datasets made on this machine: the TensorFlow Playground sets (generated exactly as the
Playground does, labels +1/-1 mapped to 1/0, seeded), scikit-learn's moons and digits,
MNIST-1D and synthetic low-rank ratings. Nothing is downloaded.
"""

from __future__ import annotations

import math

import numpy as np

from actlab.data.base import DataError, Dataset, split_standardise, standardise
from actlab.registry import Registry

LOADERS: Registry = Registry("dataset", error=DataError)
register = LOADERS.register


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
