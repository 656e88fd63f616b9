"""Flax models that take their activation(s) as an argument, behind one small protocol.

The protocol (`Model`, the `Role` labels) and the helpers models share are in
actlab.models.base; each model is one module with `build(...)` and `sites(**params)`, and
the table below is the one place that names them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from actlab.activations import Spec
from actlab.config import validate
from actlab.models import cnn, custom, gpt, mlp, recommender, resnet, transformer
from actlab.models.base import (  # noqa: F401  (the protocol's public names)
    DOUBLED_MODELS,
    GATED_MODELS,
    GLU_WIDTHS,
    DyT,
    Model,
    ModelError,
    Role,
    act_site,
    choice,
    fraction,
    is_doubled,
    is_gated,
    matched_units,
    new_aux,
    paired,
    positive_int,
    prefix_labels,
    require_sequence_or_image,
    unit,
)
from actlab.models.initializers import Scheme
from actlab.registry import Registry

CAUSAL_MODELS = ("gpt",)  # causal language models: logits [B, T, vocab] for text datasets


class Builder(NamedTuple):
    """A model: `build(*, specs, num_classes, input_shape, init, **params)` and its number
    of activation sites, `sites(**params)`."""

    build: Callable[..., Model]
    sites: Callable[..., int]


_BUILDERS: Registry[Builder] = Registry("model", {
    "mlp": Builder(mlp.build, mlp.sites),
    "cnn": Builder(cnn.build, cnn.sites),
    "transformer": Builder(transformer.build, transformer.sites),
    "resnet": Builder(resnet.build, resnet.sites),
    "recommender": Builder(recommender.build, recommender.sites),
    "gpt": Builder(gpt.build, gpt.sites),
    "custom": Builder(custom.build, custom.sites),  # layers discovered when built
}, error=ModelError)


def register(name: str, sites: Callable[..., int]) -> Callable:
    """Decorator: register a builder `fn(*, specs, num_classes, input_shape, init, **params)`.

    `sites(**params)` says how many activation sites the model has.
    """

    def deco(fn: Callable[..., Model]) -> Callable[..., Model]:
        _BUILDERS.add(name, Builder(fn, sites))
        return fn

    return deco


def names() -> list[str]:
    """Known model names."""
    return _BUILDERS.names()


def params_of(name: str) -> dict[str, Any]:
    """The model-specific parameters of `name` with their defaults."""
    sig = inspect.signature(_BUILDERS.get(name).build)
    wired = ("specs", "num_classes", "input_shape", "init", "num_users", "num_items")
    return {k: p.default for k, p in sig.parameters.items()
            if p.kind == p.KEYWORD_ONLY and k not in wired}


def check(name: str, params: Mapping[str, Any]) -> int:
    """Validate model `name` with `params`; return its number of activation sites."""
    known = params_of(name)
    validate.reject_unknown("model", name, params, known, ModelError)
    return _BUILDERS.get(name).sites(**{**known, **params})


def build(name: str, *, specs: tuple[Spec, ...], num_classes: int, input_shape: tuple[int, ...],
          init: Scheme | tuple[str, str, float] = ("he", "normal", 1.0),
          **params: Any) -> Model:
    """Build model `name` (see names()) for the given activations and data shape."""
    builder = _BUILDERS.get(name)
    if name not in GATED_MODELS and any(sp.gated for sp in specs):
        raise ModelError(f"gated units (GLU family) need model={' or model='.join(GATED_MODELS)};"
                         f" model '{name}' applies its activation elementwise")
    doubled = next((sp.name for sp in specs if sp.doubled), None)
    if name not in DOUBLED_MODELS and doubled is not None:
        raise ModelError(f"{doubled} doubles a layer's width; it needs "
                         f"model={' or model='.join(DOUBLED_MODELS)}, not model '{name}'")
    return builder.build(specs=specs, num_classes=num_classes, input_shape=input_shape,
                           init=init, **params)
