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
# The functions. Each is written for stability in float32 and bfloat16: no
# exp of a large positive number, and where() branches that are safe on both
# sides so gradients stay finite.

def _neg_expm1(z, scale=1.0):
    """scale * (exp(z / scale) - 1) for z <= 0, safe for any z."""
    return scale * jnp.expm1(jnp.minimum(z, 0.0) / scale)


@register("identity", formula=r"x", deriv_range=(1.0, 1.0), monotone=True, smooth=True,
          zero_centred=True, description="linear: a stack of such layers stays linear")
def identity(z):
    return z


@register("sigmoid", formula=r"\frac{1}{1+e^{-x}}", output_range=(0.0, 1.0),
          deriv_range=(0.0, 0.25), monotone=True, smooth=True, saturation=(0.0, 0.0),
          description="logistic; sigma'(0)=0.25 is its maximum")
def sigmoid(z):
    return jax.nn.sigmoid(z)


@register("tanh", formula=r"\tanh x", output_range=(-1.0, 1.0), deriv_range=(0.0, 1.0),
          monotone=True, smooth=True, zero_centred=True, saturation=(0.0, 0.0))
def tanh(z):
    return jnp.tanh(z)


@register("relu", formula=r"\max(0, x)", output_range=(0.0, INF), deriv_range=(0.0, 1.0),
          monotone=True, can_die=True)
def relu(z):
    return jax.nn.relu(z)


@register("leaky_relu", formula=r"x \text{ if } x>0 \text{ else } \alpha x",
          deriv_range=(0.01, 1.0), monotone=True, zero_centred=False, params={"alpha": 0.01})
def leaky_relu(z, alpha=0.01):
    return jnp.where(z > 0, z, alpha * z)


@register("prelu", formula=r"x \text{ if } x>0 \text{ else } \alpha x,\ \alpha \text{ learned}",
          deriv_range=(0.25, 1.0), monotone=True, params={"alpha": 0.25},
          learnable=("alpha",), description="He et al. 2015; alpha initialised to 0.25")
def prelu(z, alpha=0.25):
    return jnp.where(z > 0, z, alpha * z)


@register("elu", formula=r"x \text{ if } x>0 \text{ else } \alpha(e^x-1)",
          output_range=(-1.0, INF), deriv_range=(0.0, 1.0), monotone=True, smooth=True,
          saturation=(0.0, INF), params={"alpha": 1.0},
          description="smooth for alpha=1; saturates to -alpha")
def elu(z, alpha=1.0):
    return jnp.where(z > 0, z, alpha * _neg_expm1(z))


@register("selu", formula=r"\lambda\,(x \text{ if } x>0 \text{ else } \alpha(e^x-1))",
          output_range=(-SELU_LAMBDA * SELU_ALPHA, INF),
          deriv_range=(0.0, SELU_LAMBDA * SELU_ALPHA), monotone=True,
          saturation=(0.0, INF), description="self-normalising with LeCun-normal init")
def selu(z):
    return SELU_LAMBDA * jnp.where(z > 0, z, SELU_ALPHA * _neg_expm1(z))


@register("celu", formula=r"\max(0,x)+\min(0,\alpha(e^{x/\alpha}-1))",
          output_range=(-1.0, INF), deriv_range=(0.0, 1.0), monotone=True, smooth=True,
          saturation=(0.0, INF), params={"alpha": 1.0})
def celu(z, alpha=1.0):
    return jnp.maximum(z, 0.0) + _neg_expm1(z, alpha)


@register("gelu", formula=r"x\,\Phi(x)", output_range=(-0.16997, INF),
          deriv_range=(-0.12900, 1.12900),
          smooth=True, saturation=(GELU_ARGMIN, INF), params={"approximate": False},
          description="exact erf form; approximate=true gives the tanh form")
def gelu(z, approximate=False):
    if approximate:
        # 0.5 (1 + tanh u) == sigmoid(2u); the sigmoid form keeps the far left tail accurate.
        c = math.sqrt(2.0 / math.pi)
        return z * jax.nn.sigmoid(2.0 * c * (z + 0.044715 * z**3))
    return 0.5 * z * (1.0 + jax.lax.erf(z / math.sqrt(2.0)))


def _swish_saturation(beta=1.0):
    return (SWISH_ARGMIN / beta, INF) if beta > 0 else None


@register("swish", formula=r"x\,\sigma(\beta x)", output_range=(-0.27846, INF),
          deriv_range=(-0.09984, 1.09984), smooth=True, saturation=(SWISH_ARGMIN, INF),
          params={"beta": 1.0}, learnable=("beta",), saturation_fn=_swish_saturation,
          description="beta=1 is SiLU; beta may be learned")
def swish(z, beta=1.0):
    return z * jax.nn.sigmoid(beta * z)


@register("silu", formula=r"x\,\sigma(x)", output_range=(-0.27846, INF),
          deriv_range=(-0.09984, 1.09984), smooth=True, saturation=(SWISH_ARGMIN, INF))
def silu(z):
    return z * jax.nn.sigmoid(z)


@register("mish", formula=r"x\tanh(\mathrm{softplus}(x))", output_range=(-0.30884, INF),
          deriv_range=(-0.11253, 1.08849), smooth=True, saturation=(MISH_ARGMIN, INF))
def mish(z):
    return z * jnp.tanh(jax.nn.softplus(z))


@register("softplus", formula=r"\log(1+e^x)", output_range=(0.0, INF), deriv_range=(0.0, 1.0),
          monotone=True, smooth=True, saturation=(0.0, INF))
def softplus(z):
    # log1p(exp(-|x|)) + max(x, 0), with the gradient defined by jax as sigmoid(x).
    return jax.nn.softplus(z)


@register("softsign", formula=r"\frac{x}{1+|x|}", output_range=(-1.0, 1.0),
          deriv_range=(0.0, 1.0), monotone=True, zero_centred=True, saturation=(0.0, 0.0),
          description="polynomial tails (Glorot & Bengio 2010)")
def softsign(z):
    return z / (1.0 + jnp.abs(z))


@register("hard_sigmoid", formula=r"\mathrm{relu6}(x+3)/6", output_range=(0.0, 1.0),
          deriv_range=(0.0, 1.0 / 6.0), monotone=True, can_die=True, saturation=(-3.0, 3.0))
def hard_sigmoid(z):
    return jnp.clip(z + 3.0, 0.0, 6.0) / 6.0


@register("hard_swish", formula=r"x\,\mathrm{relu6}(x+3)/6", output_range=(-0.375, INF),
          deriv_range=(-0.5, 1.5), can_die=True, description="MobileNetV3")
def hard_swish(z):
    return z * jnp.clip(z + 3.0, 0.0, 6.0) / 6.0


@register("relu6", formula=r"\min(\max(0,x),6)", output_range=(0.0, 6.0),
          deriv_range=(0.0, 1.0), monotone=True, can_die=True, saturation=(-INF, 6.0))
def relu6(z):
    return jnp.clip(z, 0.0, 6.0)


@register("hard_tanh", formula=r"\max(-1,\min(1,x))", output_range=(-1.0, 1.0),
          deriv_range=(0.0, 1.0), monotone=True, zero_centred=True, can_die=True,
          saturation=(-1.0, 1.0))
def hard_tanh(z):
    return jnp.clip(z, -1.0, 1.0)


@register("squareplus", formula=r"\frac{x+\sqrt{x^2+b}}{2}", output_range=(0.0, INF),
          deriv_range=(0.0, 1.0), monotone=True, smooth=True, saturation=(0.0, INF),
          params={"b": 4.0}, description="algebraic softplus (Barron 2021)")
def squareplus(z, b=4.0):
    # For z < 0, z + sqrt(z^2 + b) cancels catastrophically; (z + s)(s - z) = b gives a
    # stable form. Each branch sees only its own sign so neither makes inf/nan gradients.
    zp, zn = jnp.maximum(z, 0.0), jnp.minimum(z, 0.0)
    return jnp.where(z >= 0, 0.5 * (zp + jnp.sqrt(zp * zp + b)),
                     0.5 * b / (jnp.sqrt(zn * zn + b) - zn))


@register("sparse_plus",
          formula=r"0,\ \tfrac{(x+1)^2}{4},\ x \text{ on } (-\infty,-1],(-1,1),[1,\infty)",
          output_range=(0.0, INF), deriv_range=(0.0, 1.0), monotone=True, can_die=True)
def sparse_plus(z):
    return jnp.where(z <= -1.0, 0.0, jnp.where(z >= 1.0, z, (z + 1.0) ** 2 / 4.0))


@register("tanhshrink", formula=r"x-\tanh x", deriv_range=(0.0, 1.0), monotone=True,
          smooth=True, zero_centred=True)
def tanhshrink(z):
    return z - jnp.tanh(z)


@register("log_sigmoid", formula=r"-\log(1+e^{-x})", output_range=(-INF, 0.0),
          deriv_range=(0.0, 1.0), monotone=True, smooth=True, saturation=(-INF, 0.0))
def log_sigmoid(z):
    return jax.nn.log_sigmoid(z)


@register("softmax", formula=r"\frac{e^{z_i}}{\sum_j e^{z_j}}", output_range=(0.0, 1.0),
          deriv_range=(-0.25, 0.25), smooth=True, output_only=True, params={"axis": -1},
          description="output head; computed with the max subtracted")
def softmax(z, axis=-1):
    return jax.nn.softmax(z, axis=axis)


@register("log_softmax", formula=r"z_i-\log\sum_j e^{z_j}", output_range=(-INF, 0.0),
          deriv_range=(-1.0, 1.0), smooth=True, output_only=True, params={"axis": -1})
def log_softmax(z, axis=-1):
    return jax.nn.log_softmax(z, axis=axis)
