"""The built-in activation functions, registered with their metadata.

Each is written for stability in float32 and bfloat16: no exp of a large positive
number, and where() branches that are safe on both sides so gradients stay finite.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from actlab.activations.base import (
    GELU_ARGMIN,
    INF,
    MISH_ARGMIN,
    SELU_ALPHA,
    SELU_LAMBDA,
    SWISH_ARGMIN,
    Table,
)

TABLE = Table()
register = TABLE.register


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


@register("crelu", formula=r"[\max(0, x),\ \max(0, -x)]", output_range=(0.0, INF),
          deriv_range=(0.0, 1.0), monotone=True, can_die=True, doubled=True,
          description="concatenated relu (Shang et al. 2016; Abbas et al. 2023 against loss "
                      "of plasticity): a layer outputs [relu(z), relu(-z)], twice its width; "
                      "phi and its metadata are relu's, applied to each half")
def crelu(z):
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
