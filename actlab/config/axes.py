"""Hyperparameters trained side by side as members of one program (train.vmap), as data.

`train.vmap.<group>.<key>=[v1, v2, ...]` makes one axis; members are the grid of all axes
times the seeds. Here an axis is only its key and values (checked for form); how its
value enters a member's initial state is the engine's (actlab.engine.axes), and whether an
activation has the parameter is checked against the registry when the config is resolved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from actlab.errors import UserError


class AxisError(UserError):
    """A vmapped hyperparameter that cannot be (one line)."""


@dataclasses.dataclass(frozen=True)
class Axis:
    """One vmapped hyperparameter: its key (as in records) and its values."""

    key: str
    values: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class LearningRate(Axis):
    """optimizer.lr: written into the optimizer state (optax.inject_hyperparams)."""


@dataclasses.dataclass(frozen=True)
class InitGain(Axis):
    """init.gain: rescales every kernel except the output layer's."""

    base: float = 1.0  # init.gain the model was initialised with


@dataclasses.dataclass(frozen=True)
class ActivationParam(Axis):
    """activation.<param>: a numeric activation parameter, held fixed in training."""

    param: str = ""


def floats(key: str, values: Any, positive: bool) -> tuple[float, ...]:
    """The values of train.vmap.<key> as floats (one number is a list of one)."""
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise AxisError(f"train.vmap.{key} must be a list of numbers, got {v!r}")
        if positive and v <= 0:
            raise AxisError(f"train.vmap.{key} must be > 0, got {v:g}")
        out.append(float(v))
    if not out:
        raise AxisError(f"train.vmap.{key} is an empty list")
    return tuple(out)


KINDS = ("optimizer.lr", "init.gain", "activation.<numeric parameter>")


def parse(section: Mapping[str, Any] | None, per_layer: bool,
          init_gain: float) -> tuple[Axis, ...]:
    """Axes from train.vmap ({optimizer: {lr: [...]}}); null entries are skipped.

    `per_layer` says whether model.activations names one activation per layer (then no
    activation axis).
    """
    axes: list[Axis] = []
    for group, inner in (section or {}).items():
        for key, values in (inner or {}).items():
            full = f"{group}.{key}"
            if values is None:
                continue
            if full == "optimizer.lr":
                axes.append(LearningRate(full, floats(full, values, True)))
            elif full == "init.gain":
                axes.append(InitGain(full, floats(full, values, True), base=init_gain))
            elif group == "activation":
                if per_layer:
                    raise AxisError(f"train.vmap.{full} needs one activation for all layers, "
                                    f"not model.activations")
                axes.append(ActivationParam(full, floats(full, values, False), param=key))
            else:
                raise AxisError(f"train.vmap.{full} cannot be vmapped; choose from: "
                                f"{', '.join(KINDS)}")
    return tuple(axes)
