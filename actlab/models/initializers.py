"""Weight initialisations: he, glorot, lecun, orthogonal, critical, each with a gain.

Each returns a Flax/JAX initializer for kernels laid out [..., fan_in, fan_out];
`stacked=True` treats a leading axis as a stack of independent layers (the
scan-over-layers MLP), so fans are computed per layer.

An explicit `sigma_w2` overrides the scheme's variance: Var w = gain^2 sigma_w2 / fan_in
(normal, truncated normal or uniform with that variance; orthogonal matrices scaled to
it). `critical` is that with the edge-of-chaos sigma_w2 of actlab.theory, which the
caller supplies. `sigma_b2 > 0` draws biases N(0, sigma_b2); 0 keeps them at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple, cast

import jax
import jax.numpy as jnp

from actlab.config import DISTRIBUTIONS, INIT_SCHEMES  # noqa: F401  (names live in config)

# name -> (variance scale, fan mode); Var w = gain^2 * scale / fan
_Mode = Literal["fan_in", "fan_out", "fan_avg", "fan_geo_avg"]
_Distribution = Literal["truncated_normal", "normal", "uniform"]  # DISTRIBUTIONS
_SCHEMES: dict[str, tuple[float, _Mode]] = {
    "he": (2.0, "fan_in"),  # relu family (He et al. 2015)
    "glorot": (1.0, "fan_avg"),  # tanh/sigmoid (Glorot & Bengio 2010): 2/(fan_in+fan_out)
    "lecun": (1.0, "fan_in"),  # selu
}


def square_sigma_w2(name: str) -> float:
    """Var w x fan_in of a scheme at gain 1 for a square layer (fan_in = fan_out)."""
    return 1.0 if name == "orthogonal" else _SCHEMES[name][0]

SigmaW2 = float | tuple[float, ...] | None  # one value, one per layer, or the scheme's


def names() -> list[str]:
    """Known initialisation names ('auto': the activation's recommended scheme)."""
    return list(INIT_SCHEMES)


def kernel_init(name: str, distribution: str = "normal", gain: float = 1.0,
                stacked: bool = False, sigma_w2: SigmaW2 = None) -> Callable:
    """Initializer for a kernel (or a stack of kernels when `stacked`).

    With `sigma_w2` (a tuple when stacked: one value per layer of the stack) every scheme
    draws Var w = gain^2 sigma_w2 / fan_in instead of its own variance.
    """
    if sigma_w2 is not None:
        return _explicit(name, distribution, gain, stacked, sigma_w2)
    batch_axis = (0,) if stacked else ()
    if name == "orthogonal":
        base = jax.nn.initializers.orthogonal(scale=gain, column_axis=-1)
        if not stacked:
            return base

        def init_stack(key, shape, dtype=jnp.float32):
            keys = jax.random.split(key, shape[0])
            return jax.vmap(lambda k: base(k, shape[1:], dtype))(keys)

        return init_stack
    if name == "critical":
        raise ValueError("init 'critical' needs its sigma_w2 (actlab.theory.critical_sigma_w2)")
    if name not in _SCHEMES:
        raise ValueError(f"unknown init '{name}'; known: {', '.join(names())}")
    scale, mode = _SCHEMES[name]
    return jax.nn.initializers.variance_scaling(
        gain**2 * scale, mode, cast(_Distribution, distribution), in_axis=-2, out_axis=-1,
        batch_axis=batch_axis
    )


def _explicit(name: str, distribution: str, gain: float, stacked: bool,
              sigma_w2: float | tuple[float, ...]) -> Callable:
    """Var w = gain^2 sigma_w2 / fan_in, per layer of a stack when sigma_w2 is a tuple."""
    per_layer = isinstance(sigma_w2, (tuple, list))
    if per_layer and not stacked:
        raise ValueError("one sigma_w2 per layer needs a stacked kernel")
    if name not in (*_SCHEMES, "orthogonal", "critical"):
        raise ValueError(f"unknown init '{name}'; known: {', '.join(names())}")
    if not per_layer and name != "orthogonal":
        return jax.nn.initializers.variance_scaling(
            gain**2 * float(cast(float, sigma_w2)), "fan_in", cast(_Distribution, distribution),
            in_axis=-2, out_axis=-1,
            batch_axis=(0,) if stacked else ())
    if name == "orthogonal":
        base = kernel_init("orthogonal", gain=1.0, stacked=stacked)
    else:
        base = jax.nn.initializers.variance_scaling(1.0, "fan_in",
                                                    cast(_Distribution, distribution), in_axis=-2,
                                                    out_axis=-1, batch_axis=(0,))

    def init(key, shape, dtype=jnp.float32):
        w = base(key, shape, dtype)
        layer = shape[1:] if stacked else shape
        # orthonormal columns have entry variance 1/fan_in, orthonormal rows 1/fan_out
        fix = max(1.0, layer[-1] / math.prod(layer[:-1])) if name == "orthogonal" else 1.0
        s = jnp.asarray(sigma_w2, jnp.float32) * (gain**2 * fix)
        if per_layer:
            if s.shape[0] != shape[0]:
                raise ValueError(f"{s.shape[0]} sigma_w2 values for a stack of {shape[0]}")
            s = s.reshape((-1,) + (1,) * (len(shape) - 1))
        return (w * jnp.sqrt(s)).astype(dtype)

    return init


def bias_init(sigma_b2: float = 0.0) -> Callable:
    """Biases N(0, sigma_b2); zeros when sigma_b2 is 0."""
    if sigma_b2 == 0:
        return jax.nn.initializers.zeros
    return jax.nn.initializers.normal(stddev=math.sqrt(sigma_b2))


class Scheme(NamedTuple):
    """How a model initialises its hidden layers (the `init` a model builder receives).

    Built from (name, distribution, gain) or the full tuple; `sigma_w2` is None (the
    scheme's own variance), one value, or one per layer (the model's activation sites).
    """

    name: str = "he"
    distribution: str = "normal"
    gain: float = 1.0
    sigma_w2: SigmaW2 = None
    sigma_b2: float = 0.0

    def layer_sigma_w2(self, layer: int, stacked: bool = False) -> SigmaW2:
        """sigma_w2 of layer `layer` (of layers layer, layer + 1, ... when stacked)."""
        s = self.sigma_w2
        if not isinstance(s, (tuple, list)):
            return s
        return tuple(s[layer:]) if stacked else s[layer]

    def kernel(self, layer: int = 0, stacked: bool = False) -> Callable:
        """Initializer of layer `layer`'s kernel (the stack from `layer` on when stacked)."""
        return kernel_init(self.name, self.distribution, self.gain, stacked=stacked,
                           sigma_w2=self.layer_sigma_w2(layer, stacked))

    def bias(self) -> Callable:
        """Initializer of a hidden layer's bias."""
        return bias_init(self.sigma_b2)


assert set(INIT_SCHEMES) == {*_SCHEMES, "orthogonal", "auto", "critical"}, "config names them"
