"""Registry of activation functions: name -> jitted phi, with metadata.

Every function is a pure elementwise `fn(z, **params)`. Fixed parameters are bound
by `get(name, **params)`; learnable ones (prelu's alpha, swish's beta with
`learnable=True`) become Flax parameters owned by the model. The metadata in
`info(name)` drives the dead/saturated metrics, so metrics.py has no
per-activation special cases.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab.signatures import reject_unknown

INF = math.inf
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

# Positions of the minima of the non-monotone smooth functions (float64 roots of phi').
GELU_ARGMIN = -0.7517915241
SWISH_ARGMIN = -1.2784645428  # for beta = 1; scales as 1/beta
MISH_ARGMIN = -1.1923840995


class ActivationError(ValueError):
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

    def as_dict(self) -> dict:
        """Plain-dict view (for tables and JSON)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Entry:
    fn: Callable[..., jax.Array]
    info: Info
    saturation_fn: Callable[..., tuple[float, float] | None] | None = None


_REGISTRY: dict[str, _Entry] = {}


def register(
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
):
    """Decorator: register `fn(z, **params)` under `name` with its metadata."""

    def deco(fn):
        info = Info(
            name=name, formula=formula, output_range=output_range,
            deriv_range=deriv_range, monotone=monotone, smooth=smooth,
            zero_centred=zero_centred, can_die=can_die, saturation=saturation,
            params=dict(params or {}), learnable=tuple(learnable),
            output_only=output_only, description=description,
        )
        _REGISTRY[name] = _Entry(fn=fn, info=info, saturation_fn=saturation_fn)
        return fn

    return deco


def names(include_output: bool = True) -> list[str]:
    """All registered names, sorted (optionally without the output-only ones)."""
    return sorted(n for n, e in _REGISTRY.items() if include_output or not e.info.output_only)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY and ("." in name or ":" in name):
        _import_by_path(name)
    if name not in _REGISTRY:
        raise ActivationError(
            f"unknown activation '{name}'; known: {', '.join(names())} "
            "(or a Python import path such as mypkg.acts:my_fn)"
        )
    return _REGISTRY[name]


def _import_by_path(path: str) -> None:
    """Register the callable at `pkg.module:attr` (or `pkg.module.attr`) under `path`."""
    module_name, _, attr = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ActivationError(f"cannot import activation '{path}': {e}") from None
    if not callable(fn):
        raise ActivationError(f"activation '{path}' is not callable")
    register(path, description=f"user function {path}")(fn)


def info(name: str) -> Info:
    """Metadata of a registered activation."""
    return _entry(name).info


# Initialisation that keeps the forward variance steady for each function
# (He et al. 2015 for the relu family, Glorot & Bengio 2010 for the
# zero-centred squashing functions, LeCun for selu); he for anything else.
_MATCHED_INIT = {"selu": "lecun"}
_MATCHED_INIT.update(dict.fromkeys(
    ("tanh", "sigmoid", "softsign", "hard_tanh", "hard_sigmoid", "identity", "tanhshrink",
     "log_sigmoid"), "glorot"))


def recommended_init(name: str) -> str:
    """The initialisation scheme usually recommended for `name`: he, glorot or lecun."""
    return _MATCHED_INIT.get(name, "he")


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate parameters for `name`; return defaults updated with `params`."""
    inf = info(name)
    allowed = set(inf.params) | ({"learnable"} if inf.learnable else set())
    reject_unknown("activation", name, params, allowed, ActivationError)
    out = dict(inf.params)
    out.update(params)
    return out


@dataclasses.dataclass(frozen=True)
class Spec:
    """A resolved activation: function, fixed params, and learnable params' initial values."""

    name: str
    fixed: Mapping[str, Any]
    learned: Mapping[str, float]  # name -> initial value

    @property
    def info(self) -> Info:
        return info(self.name)

    def __call__(self, z: jax.Array, **learned: jax.Array) -> jax.Array:
        return _entry(self.name).fn(z, **self.fixed, **learned)

    def derivative(self, z: jax.Array, **learned: jax.Array) -> jax.Array:
        """Elementwise phi'(z), exact, via a forward-mode product with ones."""
        return jax.jvp(lambda u: self(u, **learned), (z,), (jnp.ones_like(z),))[1]

    def saturation(self) -> tuple[float, float] | None:
        """The (lo, hi) of the saturation rule at these parameter values."""
        e = _entry(self.name)
        if e.saturation_fn is not None:
            return e.saturation_fn(**self.fixed, **self.learned)
        return e.info.saturation

    def max_abs_derivative(self) -> float:
        """max |phi'| over the real line (dense grid), at these parameter values."""
        z = jnp.linspace(-40.0, 40.0, 160_001, dtype=jnp.float32)
        learned = {k: jnp.asarray(v, jnp.float32) for k, v in self.learned.items()}
        return float(jnp.nanmax(jnp.abs(self.derivative(z, **learned))))


def spec(name: str, **params: Any) -> Spec:
    """Resolve `name` and its parameters into a Spec (the form models use)."""
    params = check_params(name, params)
    learnable = bool(params.pop("learnable", False)) or name == "prelu"
    inf = info(name)
    if inf.output_only:
        raise ActivationError(f"'{name}' is an output-layer function, not a hidden activation")
    learned = {k: float(params.pop(k)) for k in inf.learnable} if learnable else {}
    return Spec(name=name, fixed=params, learned=learned)


class _Jitted:
    """A jitted activation with its metadata attached."""

    def __init__(self, sp: Spec):
        self.spec = sp
        self.info = sp.info
        self._fn = jax.jit(functools.partial(_entry(sp.name).fn, **sp.fixed))

    def __call__(self, z: jax.Array) -> jax.Array:
        return self._fn(z)

    def derivative(self, z: jax.Array) -> jax.Array:
        return self.spec.derivative(z)

    def __repr__(self) -> str:
        return f"activation({self.spec.name}, {dict(self.spec.fixed)})"


class LearnableActivation(nn.Module):
    """Flax module for an activation with trained parameters (prelu alpha, swish beta)."""

    spec: Spec
    per_unit: bool = False

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        shape = (z.shape[-1],) if self.per_unit else ()
        learned = {
            k: self.param(k, nn.initializers.constant(v), shape, z.dtype)
            for k, v in self.spec.learned.items()
        }
        return self.spec(z, **learned)


def get(name: str, **params: Any):
    """A jitted callable for fixed functions, a Flax module for learnable ones."""
    if info(name).output_only:
        params = check_params(name, params)
        return jax.jit(functools.partial(_entry(name).fn, **params))
    sp = spec(name, **params)
    if sp.learned:
        return LearnableActivation(sp)
    return _Jitted(sp)


# --------------------------------------------------------------------------- #


# The built-in functions register themselves on import.
from actlab.activations import classic  # noqa: E402, F401
