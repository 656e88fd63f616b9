"""What an activation is to the registry: its metadata (`Info`) and one table entry.

The built-in modules (classic, modern) each fill their own `Table`; the package joins them
into one registry, so no module registers into another by being imported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from actlab.errors import UserError
from actlab.registry import Registry

INF = math.inf
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

# Positions of the minima of the non-monotone smooth functions (float64 roots of phi').
GELU_ARGMIN = -0.7517915241
SWISH_ARGMIN = -1.2784645428  # for beta = 1; scales as 1/beta
MISH_ARGMIN = -1.1923840995


class ActivationError(UserError):
    """A bad activation name or parameter (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Info:
    """What a researcher (and the metrics) need to know about one activation."""

    name: str
    formula: str  # LaTeX
    output_range: tuple[float, float]
    deriv_range: tuple[float, float]
    monotone: bool
    smooth: bool
    zero_centred: bool
    can_die: bool  # phi' is exactly 0 on a half-line, so a unit can be dead
    # Pre-activations outside (lo, hi) whose |phi'| is below 1% of max|phi'| count as
    # saturated; None means the function has no saturating tail. Exactly flat
    # "off" sides (relu's z <= 0) are excluded: they show up as dead units.
    saturation: tuple[float, float] | None
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    learnable: tuple[str, ...] = ()  # parameters that may be trained
    output_only: bool = False  # softmax, log_softmax: not elementwise
    description: str = ""
    # A gated linear unit h = g(z_g) * z_v (two inputs): the ranges, flags and saturation
    # above are then those of its gate g, whose default name is `gate`.
    gated: bool = False
    gate: str | None = None
    # The unit applies phi to [z, -z] side by side, doubling the layer's output width
    # (concatenated relu, crelu): phi and the flags above are the elementwise function's.
    doubled: bool = False

    def as_dict(self) -> dict:
        """Plain-dict view (for tables and JSON)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Entry:
    fn: Callable[..., Any]  # phi(z, **params); for a gated unit: fixed params -> gate name
    info: Info
    saturation_fn: Callable[..., tuple[float, float] | None] | None = None
    resolve: Callable[[dict[str, Any], Callable[..., Any]], dict[str, Any]] | None = None


def entry(
    fn: Callable[..., Any],
    name: str,
    *,
    formula: str = "",
    output_range: tuple[float, float] = (-INF, INF),
    deriv_range: tuple[float, float] = (-INF, INF),
    monotone: bool = False,
    smooth: bool = False,
    zero_centred: bool = False,
    can_die: bool = False,
    saturation: tuple[float, float] | None = None,
    params: Mapping[str, Any] | None = None,
    learnable: tuple[str, ...] = (),
    output_only: bool = False,
    description: str = "",
    saturation_fn: Callable[..., tuple[float, float] | None] | None = None,
    resolve: Callable[[dict[str, Any], Callable[..., Any]], dict[str, Any]] | None = None,
    gated: bool = False,
    gate: str | None = None,
    doubled: bool = False,
) -> Entry:
    """The table entry of `fn(z, **params)` under `name`, with its metadata.

    `resolve(params, spec) -> params` completes the parameters after the defaults and the
    caller's values are merged, with the registry's `spec` to look other functions up
    (rational fills its coefficients by a fit to `init_like`).
    For `gated=True`, `fn(**fixed)` returns the name of the gate function. For
    `doubled=True`, `fn` is the elementwise phi that a layer applies to [z, -z].
    """
    if gated and doubled:
        raise ActivationError(f"activation '{name}': a unit is gated or doubled, not both")

    info = Info(
        name=name, formula=formula, output_range=output_range,
        deriv_range=deriv_range, monotone=monotone, smooth=smooth,
        zero_centred=zero_centred, can_die=can_die, saturation=saturation,
        params=dict(params or {}), learnable=tuple(learnable),
        output_only=output_only, description=description, gated=gated, gate=gate,
        doubled=doubled,
    )
    return Entry(fn=fn, info=info, saturation_fn=saturation_fn, resolve=resolve)


class Table(Registry[Entry]):
    """One module's activations; `register(name, **metadata)` decorates `fn(z, **params)`."""

    def __init__(self) -> None:
        super().__init__("activation", error=ActivationError)

    def register(self, name: str, **metadata: Any) -> Callable:
        """Decorator: add `fn(z, **params)` under `name` with its metadata (see `entry`)."""

        def deco(fn: Callable) -> Callable:
            self.add(name, entry(fn, name, **metadata))
            return fn

        return deco
