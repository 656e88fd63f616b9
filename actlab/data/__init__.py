"""Datasets: one registry of loaders, one in-memory form for all of them (`Dataset`).

The offline sets are in actlab.data.synthetic, the bundled text in actlab.data.text, the
tensorflow-datasets ones in actlab.data.tfds; the table below joins them, and `register`
adds a user's loader.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from actlab.config.validate import choice, reject_unknown
from actlab.data import synthetic, text, tfds
from actlab.data.base import (  # noqa: F401  (public names of the data layer)
    DataError,
    Dataset,
    split_standardise,
    standardise,
)
from actlab.registry import Registry

_LOADERS: Registry[Callable[..., Dataset]] = Registry.union(
    "dataset", synthetic.LOADERS, text.LOADERS, tfds.LOADERS, error=DataError)


def register(name: str) -> Callable:
    """Decorator: register `load(**params) -> Dataset` under `name`."""
    return _LOADERS.register(name)


def names() -> list[str]:
    """Registered dataset names."""
    return _LOADERS.names()


def params_of(name: str) -> dict[str, Any]:
    """Parameters of dataset `name` with their defaults."""
    sig = inspect.signature(_LOADERS.get(name))
    return {k: p.default for k, p in sig.parameters.items()}


def check(name: str, params: Mapping[str, Any]) -> None:
    """Raise DataError unless `name` is known and `params` are accepted."""
    _LOADERS.get(name)  # unknown: one line listing the known ones
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
    if "context" in accepted:
        t = params.get("context", accepted["context"])
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise DataError(f"dataset.context must be an integer >= 1, got {t!r}")
    if "tokens" in accepted:
        choice("dataset.tokens", params.get("tokens", accepted["tokens"]), text.TOKENS,
               error=DataError)
    if "noise" in accepted:
        noise = params.get("noise", accepted["noise"])
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
            raise DataError(f"dataset.noise must be a number >= 0, got {noise!r}")


def load(name: str, **params: Any) -> Dataset:
    """Load (or generate) dataset `name`; NaN/inf in its inputs is an error."""
    check(name, params)
    ds = _LOADERS.get(name)(**params)
    for split, arr in (("train", ds.x_train), ("test", ds.x_test)):
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        if bad:
            raise DataError(f"dataset '{name}' has {bad} non-finite input values in its "
                            f"{split} split")
    return ds
