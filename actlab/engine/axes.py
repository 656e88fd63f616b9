"""Hyperparameters trained side by side as members of one program (vmapped axes).

`train.vmap.<group>.<key>=[v1, v2, ...]` makes one axis; members are the grid of
all axes times the seeds. Each axis type owns its validation and how its value
enters a member's initial state:

- `LearningRate` (optimizer.lr): written into the optimizer state, which then
  holds the rate (optax.inject_hyperparams).
- `InitGain` (init.gain): rescales every kernel except the output layer's.
- `ActivationParam` (activation.<p>): a numeric parameter of the activation, held
  by the model as a frozen (never updated) parameter with the member's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from actlab import activations
from actlab.errors import UserError


class AxisError(UserError):
    """A vmapped hyperparameter that cannot be (one line)."""


@dataclasses.dataclass(frozen=True)
class Axis:
    """One vmapped hyperparameter: its key (as in records) and its values."""

    key: str
    values: tuple[float, ...]

    def init_params(self, params, value, model) -> Any:
        """The member's parameters with this axis' value applied (before the optimizer)."""
        return params

    def init_opt_state(self, opt_state, value) -> Any:
        """The member's optimizer state with this axis' value applied."""
        return opt_state

    def spec(self, sp: activations.Spec, value: float) -> activations.Spec:
        """A layer's activation as this member sees it."""
        return sp


@dataclasses.dataclass(frozen=True)
class LearningRate(Axis):
    def init_opt_state(self, opt_state, value):
        opt_state.hyperparams["learning_rate"] = value
        return opt_state


@dataclasses.dataclass(frozen=True)
class InitGain(Axis):
    base: float = 1.0  # init.gain the model was initialised with

    def init_params(self, params, value, model):
        hidden = model.mask(params, lambda r: r.kernel and r.group != "out")
        return jax.tree.map(lambda a, m: a * (value / self.base) if m else a, params, hidden)


@dataclasses.dataclass(frozen=True)
class ActivationParam(Axis):
    param: str = ""

    def init_params(self, params, value, model):
        own = model.mask(params, lambda r: r.group == "act" and r.param == self.param)
        return jax.tree.map(lambda a, m: jnp.full_like(a, value) if m else a, params, own)

    def spec(self, sp, value):
        return dataclasses.replace(sp, fixed={**sp.fixed, self.param: value})


def _floats(key: str, values: Any, positive: bool) -> tuple[float, ...]:
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


def parse(section: Mapping[str, Any] | None, activation: Mapping[str, Any],
          per_layer: bool, init_gain: float) -> tuple[Axis, ...]:
    """Axes from train.vmap ({optimizer: {lr: [...]}}); null entries are skipped.

    `activation` is the activation section ({name, **params}); `per_layer` says whether
    model.activations names one activation per layer (then no activation axis).
    """
    axes: list[Axis] = []
    name = activation.get("name", "relu")
    for group, inner in (section or {}).items():
        for key, values in (inner or {}).items():
            full = f"{group}.{key}"
            if values is None:
                continue
            if full == "optimizer.lr":
                axes.append(LearningRate(full, _floats(full, values, True)))
            elif full == "init.gain":
                axes.append(InitGain(full, _floats(full, values, True), base=init_gain))
            elif group == "activation":
                axes.append(_activation_axis(name, key, values, activation, per_layer))
            else:
                raise AxisError(f"train.vmap.{full} cannot be vmapped; choose from: "
                                f"{', '.join(KINDS)}")
    return tuple(axes)


def _activation_axis(name: str, key: str, values: Any, activation: Mapping[str, Any],
                     per_layer: bool) -> ActivationParam:
    full = f"activation.{key}"
    numeric = {k: v for k, v in activations.info(name).params.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if key not in numeric:
        raise AxisError(f"train.vmap.{full}: activation '{name}' has no numeric parameter "
                        f"'{key}'; it has: {', '.join(numeric) or 'none'}")
    if per_layer:
        raise AxisError(f"train.vmap.{full} needs one activation for all layers, not "
                        f"model.activations")
    vals = _floats(full, values, False)
    base = {k: v for k, v in activation.items() if k != "name"}
    for v in vals:
        try:
            activations.spec(name, **{**base, key: v})
        except activations.ActivationError as e:
            raise AxisError(f"train.vmap.{full}: {e}") from None
    return ActivationParam(full, vals, param=key)
