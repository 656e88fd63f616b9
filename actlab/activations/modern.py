"""Activation functions of today's models, registered with their metadata.

relu2 (Primer), quick_gelu (CLIP), xielu (Apertus), rational (Pade activation units),
smish, aptx, and the gated linear units of Shazeer (2020): swiglu, geglu, reglu, glu,
bilinear. As in classic.py, every branch of a where() is finite on its own, so values
and gradients stay finite in float32 and bfloat16 for any finite input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from actlab.activations.base import (
    INF,
    SWISH_ARGMIN,
    ActivationError,
    Table,
)
from actlab.activations.classic import TABLE as CLASSIC

TABLE = Table()
register = TABLE.register

QUICK_GELU_BETA = 1.702  # CLIP's sigmoid scale; also gpt-oss's SwiGLU alpha
SWISH_MIN = -0.2784645428  # min of x sigmoid(x), at SWISH_ARGMIN; scales as 1/beta
SMISH_ARGMIN = -1.3945193019  # float64 root of smish'
SMISH_MIN = -0.2499936637

# xIELU (Huang & Schlag 2024) as trained in Apertus: alpha_p = softplus(a_p),
# alpha_n = beta + softplus(a_n), both initialised to 0.8 with beta = 0.5.
XIELU_ALPHA_INIT = 0.8
XIELU_BETA = 0.5
XIELU_A_P = math.log(math.expm1(XIELU_ALPHA_INIT))  # softplus^-1(0.8)
XIELU_A_N = math.log(math.expm1(XIELU_ALPHA_INIT - XIELU_BETA))  # softplus^-1(0.3)
XIELU_MIN = -0.2057512241  # at x = log(1 - beta/alpha_n) = log(0.375)

RATIONAL_NUM = tuple(f"p{k}" for k in range(6))  # P(x) = sum_k p_k x^k, degree 5
RATIONAL_DEN = tuple(f"q{k}" for k in range(1, 5))  # Q(x) = 1 + sum_k |q_k x^k|, degree 4
RATIONAL_FIT_INTERVAL = (-3.0, 3.0)


def _swish_min_saturation(scale: float) -> tuple[float, float] | None:
    return (SWISH_ARGMIN / scale, INF) if scale > 0 else None


@register("relu2", formula=r"\max(0, x)^2", output_range=(0.0, INF), deriv_range=(0.0, INF),
          monotone=True, can_die=True, description="squared ReLU (So et al. 2021, Primer)")
def relu2(z):
    return jnp.square(jnp.maximum(z, 0.0))


@register("quick_gelu", formula=r"x\,\sigma(1.702\,x)",
          output_range=(SWISH_MIN / QUICK_GELU_BETA, INF), deriv_range=(-0.09984, 1.09984),
          smooth=True, saturation=_swish_min_saturation(QUICK_GELU_BETA),
          description="CLIP's sigmoid approximation of GELU: swish with beta = 1.702")
def quick_gelu(z):
    return z * jax.nn.sigmoid(QUICK_GELU_BETA * z)


@register("xielu",
          formula=r"\alpha_p x^2+\beta x \text{ if } x>0 \text{ else } "
                  r"\alpha_n(e^{\min(x,\epsilon)}-1-x)+\beta x,\ "
                  r"\alpha_p=\mathrm{softplus}(a_p),\ \alpha_n=\beta+\mathrm{softplus}(a_n)",
          output_range=(XIELU_MIN, INF), deriv_range=(XIELU_BETA - XIELU_ALPHA_INIT, INF),
          smooth=True,
          params={"a_p": XIELU_A_P, "a_n": XIELU_A_N, "beta": XIELU_BETA, "eps": -1e-6,
                  "learnable": True},
          learnable=("a_p", "a_n"),
          description="Huang & Schlag 2024 (Apertus); a_p, a_n learned (alpha_p = alpha_n = 0.8 "
                      "at init), beta, eps fixed; phi' -> beta at 0 from both sides, "
                      "beta - alpha_n on the (eps, 0] window")
def xielu(z, a_p=XIELU_A_P, a_n=XIELU_A_N, beta=XIELU_BETA, eps=-1e-6):
    alpha_p = jax.nn.softplus(a_p)
    alpha_n = beta + jax.nn.softplus(a_n)
    zp, zn = jnp.maximum(z, 0.0), jnp.minimum(z, 0.0)
    return jnp.where(z > 0, alpha_p * zp * zp + beta * zp,
                     alpha_n * (jnp.expm1(jnp.minimum(z, eps)) - zn) + beta * zn)


@register("smish", formula=r"x\tanh(\log(1+\sigma(x)))", output_range=(SMISH_MIN, INF),
          deriv_range=(-0.08915, 0.63688), smooth=True, saturation=(SMISH_ARGMIN, INF),
          description="Wang et al. 2022; slope tanh(log 2) = 0.6 for large x")
def smish(z):
    return z * jnp.tanh(jnp.log1p(jax.nn.sigmoid(z)))


def _aptx_saturation(alpha=1.0, beta=1.0, gamma=0.5):
    # alpha = 1: (1 + tanh(beta x)) gamma x = 2 gamma x sigmoid(2 beta x), a scaled swish.
    if alpha == 1.0 and gamma > 0:
        return _swish_min_saturation(2.0 * beta)
    return None


@register("aptx", formula=r"(\alpha+\tanh(\beta x))\,\gamma x",
          output_range=(SWISH_MIN / 2.0, INF), deriv_range=(-0.09984, 1.09984), smooth=True,
          saturation=_swish_min_saturation(2.0), saturation_fn=_aptx_saturation,
          params={"alpha": 1.0, "beta": 1.0, "gamma": 0.5},
          description="Kumar 2022; (1, 1, 1/2) gives x sigmoid(2x)")
def aptx(z, alpha=1.0, beta=1.0, gamma=0.5):
    return (alpha + jnp.tanh(beta * z)) * gamma * z


# --------------------------------------------------------------------------- #
# Pade activation unit (Molina et al. 2020): P(x) / Q(x) with learned coefficients.


def rational(z, p0, p1, p2, p3, p4, p5, q1, q2, q3, q4, init_like="leaky_relu"):
    """P(z) / Q(z), P = sum_{k<=5} p_k z^k, Q = 1 + sum_{k=1..4} |q_k| |z|^k.

    For |z| > 1 both are divided by z^4 (Horner in u = 1/z), so no power of z is formed
    and the ratio overflows only where its value does.
    """
    del init_like  # picks the initial coefficients only (see _resolve_rational)
    b1, b2, b3, b4 = jnp.abs(q1), jnp.abs(q2), jnp.abs(q3), jnp.abs(q4)
    big = jnp.abs(z) > 1.0
    x = jnp.where(big, 0.0, z)  # |x| <= 1
    a = jnp.abs(x)
    small = (p0 + x * (p1 + x * (p2 + x * (p3 + x * (p4 + x * p5))))) / (
        1.0 + a * (b1 + a * (b2 + a * (b3 + a * b4))))
    w = jnp.where(big, z, 1.0)  # |w| >= 1
    u = 1.0 / w
    v = jnp.abs(u)
    large = (p5 * w + p4 + u * (p3 + u * (p2 + u * (p1 + u * p0)))) / (
        b4 + v * (b3 + v * (b2 + v * (b1 + v))))
    return jnp.where(big, large, small)


def _rational_np(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    p, q = c[:6], np.abs(c[6:])
    ax = np.abs(x)
    return np.polyval(p[::-1], x) / (1.0 + ax * np.polyval(q[::-1], ax))


@functools.cache
def rational_fit(init_like: str, spec: Callable[..., Any]) -> tuple[float, ...]:
    """(p0..p5, q1..q4) of the safe rational function closest to `init_like` on [-3, 3].

    Least squares on 601 equispaced points: the linearised problem P - f Q = f (one
    lstsq solve) starts a Levenberg-Marquardt fit of P/Q - f, followed by three
    Lawson reweightings (weights times |residual|) that lower the maximum error. The
    target is `init_like` at its default (initial) parameters, as the registry's `spec`
    resolves it; the result with the smallest maximum error is kept.
    """
    from scipy.optimize import least_squares

    target = None if init_like == "rational" else spec(init_like)
    if target is None or target.gated:
        raise ActivationError(f"activation 'rational': init_like must be an elementwise "
                              f"activation other than rational, got '{init_like}'")
    x = np.linspace(*RATIONAL_FIT_INTERVAL, 601)
    learned = {k: jnp.float32(v) for k, v in target.learned.items()}
    y = np.asarray(target(jnp.asarray(x, jnp.float32), **learned), np.float64)
    if not np.all(np.isfinite(y)):
        raise ActivationError(f"activation 'rational': init_like '{init_like}' is not finite "
                              f"on {list(RATIONAL_FIT_INTERVAL)}")
    powers, abs_powers = x[:, None] ** np.arange(6), np.abs(x)[:, None] ** np.arange(1, 5)
    c = np.linalg.lstsq(np.concatenate([powers, -y[:, None] * abs_powers], 1), y, rcond=None)[0]

    def residual(c, sqrt_w):
        return sqrt_w * (_rational_np(x, c) - y)

    def jac(c, sqrt_w):  # d(P/Q)/dp_j = x^j / Q, d(P/Q)/dq_k = -P/Q^2 sign(q_k) |x|^k
        q = 1.0 + abs_powers @ np.abs(c[6:])
        p = powers @ c[:6]
        return sqrt_w[:, None] * np.concatenate(
            [powers / q[:, None], -(p / q**2)[:, None] * np.sign(c[6:]) * abs_powers], 1)

    best, w = c, np.ones_like(x)
    for _ in range(4):
        c = least_squares(residual, c, jac=jac, args=(np.sqrt(w),), method="lm",
                          max_nfev=400).x
        r = np.abs(_rational_np(x, c) - y)
        if r.max() < np.abs(_rational_np(x, best) - y).max():
            best = c
        w = np.maximum(w * r / np.sum(w * r), 1e-8)
    return tuple(float(v) for v in best)


def _resolve_rational(params: dict[str, Any], spec: Callable[..., Any]) -> dict[str, Any]:
    """Coefficients left at None take the values fitted to `init_like`."""
    init_like = params["init_like"]
    if not isinstance(init_like, str):
        raise ActivationError(f"activation 'rational': init_like must be a name, "
                              f"got {init_like!r}")
    keys = RATIONAL_NUM + RATIONAL_DEN
    if any(params[k] is None for k in keys):
        fitted = dict(zip(keys, rational_fit(init_like, spec), strict=True))
        params = {k: fitted[k] if k in fitted and v is None else v for k, v in params.items()}
    return params


register("rational", formula=r"\frac{\sum_{j=0}^{5} p_j x^j}{1+\sum_{k=1}^{4} |q_k x^k|}",
         params={**dict.fromkeys(RATIONAL_NUM + RATIONAL_DEN), "init_like": "leaky_relu",
                 "learnable": True},
         learnable=RATIONAL_NUM + RATIONAL_DEN, resolve=_resolve_rational,
         description="Pade activation unit (Molina et al. 2020), safe denominator; "
                     "coefficients learned, initialised by a fit to init_like on [-3, 3]",
         )(rational)


# --------------------------------------------------------------------------- #
# Gated linear units (Shazeer 2020): h = g(x W) * (x V). The registered function maps
# the fixed parameters to the gate's name; Spec.glu applies it.


def _gated(name: str, default_gate: str, formula: str, description: str, **params: Any):
    g = CLASSIC.get(default_gate).info  # the default gates are classic functions
    return register(
        name, formula=formula, output_range=g.output_range, deriv_range=g.deriv_range,
        monotone=g.monotone, smooth=g.smooth, zero_centred=g.zero_centred, can_die=g.can_die,
        saturation=g.saturation, params={**params, "limit": None}, gated=True, gate=default_gate,
        description=description + "; limit=L: g(min(z_g, L)) (clip(z_v, -L, L) + 1)")


@_gated("swiglu", "silu", r"\mathrm{silu}(z_g)\,z_v",
        "Shazeer 2020; with limit set the gate is x sigmoid(1.702 x), as in gpt-oss")
def swiglu(limit=None):
    return "silu" if limit is None else "quick_gelu"


@_gated("geglu", "gelu", r"\mathrm{gelu}(z_g)\,z_v", "Shazeer 2020; exact erf GELU")
def geglu(limit=None):
    return "gelu"


@_gated("reglu", "relu", r"\max(0, z_g)\,z_v", "Shazeer 2020")
def reglu(limit=None):
    return "relu"


@_gated("glu", "sigmoid", r"g(z_g)\,z_v,\ g=\sigma", "Dauphin et al. 2017; gate= any "
        "elementwise activation (at its default parameters)", gate="sigmoid")
def glu(gate="sigmoid", limit=None):
    return gate


@_gated("bilinear", "identity", r"z_g\,z_v", "Shazeer 2020: no nonlinearity in the gate")
def bilinear(limit=None):
    return "identity"
