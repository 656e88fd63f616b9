"""Registry of activation functions: name -> jitted phi, with metadata.

Every function is a pure elementwise `fn(z, **params)`. Fixed parameters are bound
by `get(name, **params)`; learnable ones (prelu's alpha, swish's beta with
`learnable=True`, xielu's and rational's by default) become Flax parameters owned by
the model. The metadata in `info(name)` drives the dead/saturated metrics, so
metrics.py has no per-activation special cases.

Gated linear units (swiglu, geglu, reglu, glu, bilinear) are registered too: h =
g(z_g) * z_v takes two projections, so a gated Spec is applied with `Spec.glu`, and
its metadata (saturation, can_die, max |phi'|) is that of its gate g (`Spec.gate`).

A doubled unit (crelu) is registered by its elementwise phi (relu) with `doubled=True`: a
model applies phi to [z, -z] side by side (`Spec.doubled`; actlab.models.unit), so the
layer's output is twice as wide, while phi, phi' and the metadata stay elementwise.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab.activations import classic, modern
from actlab.activations.base import (  # noqa: F401  (the public names live here too)
    GELU_ARGMIN,
    INF,
    MISH_ARGMIN,
    SELU_ALPHA,
    SELU_LAMBDA,
    SWISH_ARGMIN,
    ActivationError,
    Entry,
    Info,
    Table,
    entry,
)
from actlab.config.validate import reject_unknown
from actlab.registry import Registry

# The one registry: the built-in tables joined, plus what `register` adds at run time.
_REGISTRY = Registry.union("activation", classic.TABLE, modern.TABLE, error=ActivationError)


def register(name: str, **metadata: Any) -> Callable:
    """Decorator: register `fn(z, **params)` under `name` with its metadata (`base.entry`)."""

    def deco(fn: Callable) -> Callable:
        _REGISTRY.add(name, entry(fn, name, **metadata))
        return fn

    return deco


def names(include_output: bool = True) -> list[str]:
    """All registered names, sorted (optionally without the output-only ones)."""
    return sorted(n for n, e in _REGISTRY.items() if include_output or not e.info.output_only)


def _entry(name: str) -> Entry:
    if name not in _REGISTRY and ("." in name or ":" in name):
        _import_by_path(name)
    if name not in _REGISTRY:
        raise ActivationError(
            f"unknown activation '{name}'; known: {', '.join(names())} "
            "(or a Python import path such as mypkg.acts:my_fn)"
        )
    return _REGISTRY.get(name)


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
    """Validate parameters for `name`; return defaults updated with `params` (resolved)."""
    e = _entry(name)
    allowed = set(e.info.params) | ({"learnable"} if e.info.learnable else set())
    reject_unknown("activation", name, params, allowed, ActivationError)
    out = dict(e.info.params)
    out.update(params)
    return e.resolve(out, spec) if e.resolve is not None else out


@dataclasses.dataclass(frozen=True)
class Spec:
    """A resolved activation: function, fixed params, and learnable params' initial values.

    Learned parameters are passed as keyword arrays to `__call__` (and `glu`); those not
    passed take their initial values. For a gated unit, `learned` holds its gate's
    learnable parameters (glu with gate=prelu learns alpha).
    """

    name: str
    fixed: Mapping[str, Any]
    learned: Mapping[str, float]  # name -> initial value

    @property
    def info(self) -> Info:
        """Metadata; for a gated unit the ranges, flags and saturation of its gate."""
        inf = info(self.name)
        if not inf.gated:
            return inf
        g = self.gate
        gi = g.info
        return dataclasses.replace(
            inf, output_range=gi.output_range, deriv_range=gi.deriv_range,
            monotone=gi.monotone, smooth=gi.smooth, zero_centred=gi.zero_centred,
            can_die=gi.can_die, saturation=g.saturation(), gate=g.name)

    @property
    def gated(self) -> bool:
        """True for a gated linear unit h = g(z_g) * z_v (apply it with `glu`)."""
        return info(self.name).gated

    @property
    def doubled(self) -> bool:
        """True for a unit that applies phi to [z, -z], doubling the layer's width (crelu)."""
        return info(self.name).doubled

    @property
    def gate(self) -> Spec:
        """The elementwise gate g of a gated unit, at its default parameters."""
        e = _entry(self.name)
        if not e.info.gated:
            raise ActivationError(f"'{self.name}' is not a gated linear unit; it has no gate")
        name = e.fn(**self.fixed)
        if not isinstance(name, str):
            raise ActivationError(f"activation '{self.name}': gate must be a name, got {name!r}")
        g = spec(name)
        if g.gated:
            raise ActivationError(f"activation '{self.name}': gate '{name}' is itself gated; "
                                  "choose an elementwise activation")
        return g

    def __call__(self, z: jax.Array, **learned: jax.Array) -> jax.Array:
        if self.gated:
            raise ActivationError(
                f"'{self.name}' is a gated linear unit g(z_g) * z_v: it takes two projections; "
                f"call Spec.glu(z_g, z_v), or Spec.gate for the elementwise gate")
        # Learned parameters not passed take their initial values.
        return _entry(self.name).fn(z, **self.fixed, **{**self.learned, **learned})

    def glu(self, z_g: jax.Array, z_v: jax.Array, **learned: jax.Array) -> jax.Array:
        """h = g(z_g) * z_v, elementwise, for a gated Spec.

        With limit L set (gpt-oss's clamped form): h = g(min(z_g, L)) * (clip(z_v, -L, L) + 1),
        and swiglu's gate is then x * sigmoid(1.702 x) (quick_gelu), as in gpt-oss.
        """
        g = self.gate
        limit = self.fixed.get("limit")
        if limit is not None:
            z_g = jnp.minimum(z_g, limit)
            z_v = jnp.clip(z_v, -limit, limit) + 1.0
        return g(z_g, **learned) * z_v  # g fills in the learned values not passed

    def derivative(self, z: jax.Array, **learned: jax.Array) -> jax.Array:
        """Elementwise phi'(z), exact, via a forward-mode product with ones."""
        return jax.jvp(lambda u: self(u, **learned), (z,), (jnp.ones_like(z),))[1]

    def saturation(self) -> tuple[float, float] | None:
        """The (lo, hi) of the saturation rule at these parameter values (a gated unit's gate's)."""
        if self.gated:
            return self.gate.saturation()
        e = _entry(self.name)
        if e.saturation_fn is not None:
            return e.saturation_fn(**self.fixed, **self.learned)
        return e.info.saturation

    def max_abs_derivative(self) -> float:
        """max |phi'| over the real line (dense grid), at these parameter values.

        For a gated unit: max |g'| of its gate g.
        """
        if self.gated:
            return dataclasses.replace(self.gate, learned=self.learned).max_abs_derivative()
        z = jnp.linspace(-40.0, 40.0, 160_001, dtype=jnp.float32)
        learned = {k: jnp.asarray(v, jnp.float32) for k, v in self.learned.items()}
        return float(jnp.nanmax(jnp.abs(self.derivative(z, **learned))))


def spec(name: str, **params: Any) -> Spec:
    """Resolve `name` and its parameters into a Spec (the form models use)."""
    params = check_params(name, params)
    inf = info(name)
    if inf.output_only:
        raise ActivationError(f"'{name}' is an output-layer function, not a hidden activation")
    if inf.gated:
        limit = params.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                  or not limit > 0):
            raise ActivationError(f"activation '{name}': limit must be null or a positive "
                                  f"number, got {limit!r}")
        sp = Spec(name=name, fixed=params, learned={})
        return dataclasses.replace(sp, learned=dict(sp.gate.learned))
    learnable = bool(params.pop("learnable", False)) or name == "prelu"
    learned = {k: float(params.pop(k)) for k in inf.learnable} if learnable else {}
    return Spec(name=name, fixed=params, learned=learned)


class _Jitted:
    """A jitted activation with its metadata attached (phi(z), or glu(z_g, z_v) if gated)."""

    def __init__(self, sp: Spec):
        self.spec = sp
        self.info = sp.info
        self._fn = jax.jit(sp.glu if sp.gated else
                           functools.partial(_entry(sp.name).fn, **sp.fixed))

    def __call__(self, z: jax.Array, z_v: jax.Array | None = None) -> jax.Array:
        return self._fn(*_inputs(self.spec, z, z_v))

    def derivative(self, z: jax.Array) -> jax.Array:
        return self.spec.derivative(z)

    def __repr__(self) -> str:
        return f"activation({self.spec.name}, {dict(self.spec.fixed)})"


def _inputs(sp: Spec, z: jax.Array, z_v: jax.Array | None) -> tuple[jax.Array, ...]:
    if sp.gated != (z_v is not None):
        raise ActivationError(f"'{sp.name}' takes " + (
            "two inputs (z_g, z_v)" if sp.gated else "one input"))
    return (z, cast(jax.Array, z_v)) if sp.gated else (z,)  # gated: z_v checked above


class LearnableActivation(nn.Module):
    """Flax module for an activation with trained parameters (prelu alpha, swish beta).

    A gated unit whose gate learns is called with both projections: m(z_g, z_v).
    """

    spec: Spec
    per_unit: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, z_v: jax.Array | None = None) -> jax.Array:
        shape = (z.shape[-1],) if self.per_unit else ()
        learned = {
            k: self.param(k, nn.initializers.constant(v), shape, z.dtype)
            for k, v in self.spec.learned.items()
        }
        if self.spec.gated:
            return self.spec.glu(*_inputs(self.spec, z, z_v), **learned)
        return self.spec(*_inputs(self.spec, z, z_v), **learned)


def get(name: str, **params: Any):
    """A jitted callable for fixed functions, a Flax module for learnable ones.

    For a gated unit the callable (or module) takes two inputs: f(z_g, z_v).
    """
    if info(name).output_only:
        params = check_params(name, params)
        return jax.jit(functools.partial(_entry(name).fn, **params))
    sp = spec(name, **params)
    if sp.learned:
        return LearnableActivation(sp)
    return _Jitted(sp)
