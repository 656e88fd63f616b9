"""How each vmapped hyperparameter (actlab.config.axes) enters a member's initial state.

- `LearningRate` (optimizer.lr): written into the optimizer state, which then holds the
  rate (optax.inject_hyperparams).
- `InitGain` (init.gain): rescales every kernel except the output layer's.
- `ActivationParam` (activation.<p>): a numeric parameter of the activation, held by the
  model as a frozen (never updated) parameter with the member's value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from actlab import activations
from actlab.config.axes import ActivationParam, Axis, AxisError, InitGain, LearningRate
from actlab.models import Model


def init_params(axis: Axis, params: Any, value: float | jax.Array, model: Model) -> Any:
    """The member's parameters with this axis' value applied (before the optimizer)."""
    if isinstance(axis, InitGain):
        hidden = model.mask(params, lambda r: r.kernel and r.group != "out")
        return jax.tree.map(lambda a, m: a * (value / axis.base) if m else a, params, hidden)
    if isinstance(axis, ActivationParam):
        own = model.mask(params, lambda r: r.group == "act" and r.param == axis.param)
        return jax.tree.map(lambda a, m: jnp.full_like(a, value) if m else a, params, own)
    return params


def init_opt_state(axis: Axis, opt_state: Any, value: float | jax.Array) -> Any:
    """The member's optimizer state with this axis' value applied."""
    if isinstance(axis, LearningRate):
        opt_state.hyperparams["learning_rate"] = value
    return opt_state


def spec(axis: Axis, sp: activations.Spec, value: float) -> activations.Spec:
    """A layer's activation as this member sees it."""
    if isinstance(axis, ActivationParam):
        return dataclasses.replace(sp, fixed={**sp.fixed, axis.param: value})
    return sp


def check(axis: Axis, activation: Mapping[str, Any]) -> None:
    """Refuse an activation axis whose parameter the activation lacks or cannot take."""
    if not isinstance(axis, ActivationParam):
        return
    name = activation.get("name", "relu")
    numeric = {k: v for k, v in activations.info(name).params.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if axis.param not in numeric:
        raise AxisError(f"train.vmap.{axis.key}: activation '{name}' has no numeric parameter "
                        f"'{axis.param}'; it has: {', '.join(numeric) or 'none'}")
    base = {k: v for k, v in activation.items() if k != "name"}
    for v in axis.values:
        try:
            activations.spec(name, **{**base, axis.param: v})
        except activations.ActivationError as e:
            raise AxisError(f"train.vmap.{axis.key}: {e}") from None
