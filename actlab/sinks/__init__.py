"""Where records go: one writer interface (actlab.sinks.base) and one module per sink.

The table below is the one place that names the sinks. A sink is a factory
`make(run_dir, **context) -> Writer` (context: options, config, members, group) and
whether it draws histograms; the compiled program asks `histograms_wanted` whether to bin
the pre-activations, never a sink's name. `register` adds a user's sink.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from actlab.config import ConfigError
from actlab.registry import Registry
from actlab.sinks import local, stdout, tensorboard, wandb
from actlab.sinks.base import (  # noqa: F401  (the interface's public names)
    AsyncWriter,
    Histograms,
    MultiWriter,
    NullWriter,
    Record,
    Writer,
)


class Sink(NamedTuple):
    """A sink: its factory and whether it wants the pre-activation histograms."""

    make: Callable[..., Writer]
    histograms: bool = False


def _none(run_dir: str | os.PathLike, **context: Any) -> Writer:
    return NullWriter()


_SINKS: Registry[Sink] = Registry("sink", {
    "local": Sink(local.make),
    "stdout": Sink(stdout.make),
    "wandb": Sink(wandb.make),
    "tensorboard": Sink(tensorboard.make, histograms=True),
    "none": Sink(_none),
}, error=ConfigError)


def register(name: str, make: Callable[..., Writer], histograms: bool = False) -> None:
    """Add a sink: `make(run_dir, **context) -> Writer`; `histograms` if it draws them."""
    _SINKS.add(name, Sink(make, histograms))


def names() -> list[str]:
    """Every registered sink name."""
    return _SINKS.names()


def get(name: str) -> Sink:
    """The sink registered under `name` (one-line error listing the others)."""
    return _SINKS.get(name)


def histograms_wanted(sink_names: Iterable[str]) -> bool:
    """Whether any of these sinks draws histograms (so the program bins them)."""
    return any(get(n).histograms for n in sink_names)


def make_writer(sink_names: Iterable[str], run_dir: str | os.PathLike,
                **context: Any) -> Writer:
    """The sinks named, fanned out behind one background thread.

    `context` is what sinks may need: options (logger.wandb), config, members, group.
    """
    return AsyncWriter(MultiWriter([get(n).make(run_dir, **context) for n in sink_names]))
