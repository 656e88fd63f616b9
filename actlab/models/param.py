"""Width parametrizations (model.param): what changes with width, per kind of layer.

An abc-parametrization (Yang & Hu 2021) sets, for each kind of weight, its initial variance,
a constant multiplier in the forward pass and its learning rate, as powers of the width.
With n the hidden width, m = n / base_width (model.base_width) the width multiplier, fan_in
the layer's input size and sigma^2 the initialisation scheme's variance numerator
(He: 2, LeCun: 1, ...):

| kind   | weights            | sp: var, mult | mup: var, mult            | ntk: var, mult     |
|--------|--------------------|---------------|---------------------------|--------------------|
| input  | first layer [D, n] | s2/fan_in, 1  | s2/fan_in, 1              | s2, 1/sqrt(fan_in) |
| hidden | [n, n]             | s2/fan_in, 1  | s2/fan_in, 1              | s2, 1/sqrt(fan_in) |
| output | readout [n, C]     | v/fan_in, 1   | m v/fan_in, 1/m           | v, 1/sqrt(fan_in)  |

(v: the readout's own variance numerator, Glorot's 2 fan_in / (fan_in + C) in the MLP).

and the learning-rate factor applied to the optimizer's update of each kind:

| kind                          | sp | mup, Adam | mup, SGD | ntk |
|-------------------------------|----|-----------|----------|-----|
| input kernel, hidden biases, norm scales (vector-like: one width dimension) | 1 | 1 | m | 1 |
| hidden kernel (matrix-like: two width dimensions) | 1 | 1/m | 1 | 1 |
| output kernel (one width dimension) | 1 | 1 | m | 1 |
| output bias, activation parameters (no width dimension) | 1 | 1 | 1 | 1 |

This is muP as microsoft/mup implements it (MuReadout: the readout's input divided by m and
its weights initialised with m times the usual variance; MuAdam: learning rate / m for
matrix-like weights; MuSGD: x m for vector-like ones, / (fan_in mult / fan_out mult) = 1 for
square hidden weights), which is Tensor Programs V's Table 3 written so that sp and mup
coincide at width = base_width. "Adam" means every optimizer that normalises the gradient
entrywise (adam, adamw); sgd and momentum are "SGD". ntk is the neural tangent
parametrization (Jacot et al. 2018): standard-normal-scaled weights, every product divided by
sqrt(fan_in), the learning rate unscaled. sp (the default) changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

PARAMS = ("sp", "mup", "ntk")
KINDS = ("input", "hidden", "output", "vector", "fixed")  # fixed: no width dimension
ADAM_LIKE = ("adam", "adamw")


def init_scale(param: str, kind: str, fan_in: int, m: float) -> float:
    """Factor on the standard deviation of the scheme's initialisation (sp: 1)."""
    if param == "ntk" and kind in ("input", "hidden", "output"):
        return math.sqrt(fan_in)
    if param == "mup" and kind == "output":
        return math.sqrt(m)
    return 1.0


def multiplier(param: str, kind: str, fan_in: int, m: float) -> float:
    """Constant multiplying the layer's product x @ W in the forward pass (sp: 1)."""
    if param == "ntk" and kind in ("input", "hidden", "output"):
        return 1.0 / math.sqrt(fan_in)
    if param == "mup" and kind == "output":
        return 1.0 / m
    return 1.0


def lr_scale(param: str, kind: str, optimizer: str, m: float) -> float:
    """Factor on the optimizer's update of a weight of this kind (its learning rate)."""
    if param != "mup":
        return 1.0
    adam = optimizer in ADAM_LIKE
    if kind == "hidden":
        return 1.0 / m if adam else 1.0
    if kind in ("input", "output", "vector"):
        return 1.0 if adam else m
    return 1.0


def table(param: str, optimizer: str, fan_in: dict[str, int], m: float) -> list[dict]:
    """The parametrization of a network as rows (kind, init std factor, multiplier, lr
    factor), for README tables and summary.json."""
    return [{"kind": k, "init_std_factor": init_scale(param, k, fan_in.get(k, 1), m),
             "multiplier": multiplier(param, k, fan_in.get(k, 1), m),
             "lr_factor": lr_scale(param, k, optimizer, m)} for k in KINDS]


def scaled(init: Callable, factor: float) -> Callable:
    """An initializer whose draws are multiplied by `factor` (itself when factor is 1)."""
    if factor == 1.0:
        return init

    def draw(key: Any, shape: Any, dtype: Any = None) -> Any:
        return init(key, shape, dtype) * factor if dtype is not None else init(key, shape) * factor

    return draw


def lr_factors(param: str, m: float, kind: Callable[[Any], str]) -> Callable:
    """A model's Model.lr_factor: optimizer name -> (factor on the update of each kind of
    parameter, `kind`: the model's Role -> kind)."""
    return lambda optimizer: ({k: lr_scale(param, k, optimizer, m) for k in KINDS}, kind)
