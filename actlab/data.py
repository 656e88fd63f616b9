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


class DataError(ValueError):
    """A bad dataset name or parameter (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train/test arrays plus what models need to know about them."""

    name: str
    x_train: np.ndarray  # float32 [N, *input_shape], standardised with train statistics
    y_train: np.ndarray  # int32 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: np.ndarray  # per-feature statistics used to standardise (for plotting raw inputs)
    std: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


_GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {}


def register(name: str):
    """Decorator: register `gen(rng, **params) -> (x [N, ...], y [N])` under `name`."""

    def deco(fn):
        _GENERATORS[name] = fn
        return fn

    return deco


def names() -> list[str]:
    """Registered dataset names."""
    return sorted(_GENERATORS)


def _params_of(name: str) -> dict[str, Any]:
    sig = inspect.signature(_GENERATORS[name])
    return {k: p.default for k, p in list(sig.parameters.items())[1:]}


COMMON = {"num_points": 500, "train_fraction": 0.5, "seed": 0}


def check(name: str, params: Mapping[str, Any]) -> None:
    """Raise DataError unless `name` is known and `params` are accepted."""
    if name not in _GENERATORS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(names())}")
    accepted = {**COMMON, **_params_of(name)}
    extra = sorted(set(params) - set(accepted))
    if extra:
        raise DataError(f"dataset '{name}' has no parameter {', '.join(extra)}; "
                        f"accepted: {', '.join(sorted(accepted))}")
    frac = params.get("train_fraction", COMMON["train_fraction"])
    if not isinstance(frac, (int, float)) or not 0.0 < frac < 1.0:
        raise DataError(f"dataset.train_fraction must be in (0, 1), got {frac!r}")
    n = params.get("num_points", COMMON["num_points"])
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise DataError(f"dataset.num_points must be an integer >= 4, got {n!r}")
    noise = params.get("noise", 0.0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise DataError(f"dataset.noise must be a number >= 0, got {noise!r}")


def load(name: str, num_points: int = 500, train_fraction: float = 0.5, seed: int = 0,
         **params: Any) -> Dataset:
    """Generate dataset `name`, shuffle, split and standardise it (train statistics)."""
    check(name, {"num_points": num_points, "train_fraction": train_fraction, **params})
    rng = np.random.default_rng(seed)
    x, y = _GENERATORS[name](rng, num_points=num_points, **params)
    perm = rng.permutation(len(x))
    x, y = x[perm].astype(np.float64), y[perm].astype(np.int32)
    n_train = int(round(train_fraction * len(x)))
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    return Dataset(name=name, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:],
                   y_test=y[n_train:], num_classes=int(y.max()) + 1,
                   mean=mean.astype(np.float32), std=std.astype(np.float32))


# --------------------------------------------------------------------------- #
# TensorFlow Playground generators (raw coordinates in about [-6, 6]).

def _label01(positive: np.ndarray) -> np.ndarray:
    return positive.astype(np.int32)


@register("spiral")
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


@register("circle")
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


@register("xor")
def xor(rng: np.random.Generator, num_points: int = 500, noise: float = 0.0):
    """x, y ~ U(-5, 5) pushed 0.3 away from the axes; label sign(x*y)."""
    x = rng.uniform(-5.0, 5.0, num_points)
    y = rng.uniform(-5.0, 5.0, num_points)
    x = x + np.where(x > 0, 0.3, -0.3)
    y = y + np.where(y > 0, 0.3, -0.3)
    nx = rng.uniform(-5.0, 5.0, num_points) * noise
    ny = rng.uniform(-5.0, 5.0, num_points) * noise
    return np.stack([x, y], 1), _label01((x + nx) * (y + ny) >= 0)


@register("gauss")
def gauss(rng: np.random.Generator, num_points: int = 500, noise: float = 0.0):
    """Two Gaussian blobs at (2, 2) (class 1) and (-2, -2); variance 0.5 + 7*noise."""
    n = num_points // 2
    std = math.sqrt(0.5 + 7.0 * noise)
    pos = rng.normal(2.0, std, (n, 2))
    neg = rng.normal(-2.0, std, (n, 2))
    return np.concatenate([pos, neg]), np.concatenate([np.ones(n), np.zeros(n)])
