"""Weight initialisations: he, glorot, lecun, orthogonal, each with a gain.

Each returns a Flax/JAX initializer for kernels laid out [..., fan_in, fan_out];
`stacked=True` treats a leading axis as a stack of independent layers (the
scan-over-layers MLP), so fans are computed per layer.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

# name -> (variance scale, fan mode); Var w = gain^2 * scale / fan
_SCHEMES = {
    "he": (2.0, "fan_in"),  # relu family (He et al. 2015)
    "glorot": (1.0, "fan_avg"),  # tanh/sigmoid (Glorot & Bengio 2010): 2/(fan_in+fan_out)
    "lecun": (1.0, "fan_in"),  # selu
}
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


def names() -> list[str]:
    """Known initialisation names ('auto': the activation's recommended scheme)."""
    return sorted([*_SCHEMES, "orthogonal", "auto"])


def kernel_init(name: str, distribution: str = "normal", gain: float = 1.0,
                stacked: bool = False) -> Callable:
    """Initializer for a kernel (or a stack of kernels when `stacked`)."""
    batch_axis = (0,) if stacked else ()
    if name == "orthogonal":
        base = jax.nn.initializers.orthogonal(scale=gain, column_axis=-1)
        if not stacked:
            return base

        def init_stack(key, shape, dtype=jax.numpy.float32):
            keys = jax.random.split(key, shape[0])
            return jax.vmap(lambda k: base(k, shape[1:], dtype))(keys)

        return init_stack
    if name not in _SCHEMES:
        raise ValueError(f"unknown init '{name}'; known: {', '.join(names())}")
    scale, mode = _SCHEMES[name]
    return jax.nn.initializers.variance_scaling(
        gain**2 * scale, mode, distribution, in_axis=-2, out_axis=-1, batch_axis=batch_axis
    )
