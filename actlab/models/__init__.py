"""Flax models that take their activation(s) as an argument, behind one small protocol.

Every model is built by `build(name, specs=..., num_classes=..., input_shape=..., **params)`
and exposes to the engine:

- `init(key, x) -> (params, state)`; state holds non-parameter collections (batch_stats)
- `apply(params, state, x, eps, capture, train, rng) -> (logits, aux, new_state)`:
  `eps` is a zero perturbation added to every pre-activation z_l, so one backward
  pass yields d loss / d z_l; with `capture`, aux holds per-layer z, h = phi(z)
  and phi'(z), either stacked [L, B, W] (the scanned MLP) or as lists of
  [B, ..., C] arrays (conv nets: the last axis is the unit/channel axis).
- `layer_sqnorms(tree) -> ([L], out)`: squared norms of each layer's weights.
- `activation_params(params)`: learned activation parameters as metric entries.

A "layer" is an activation site: layer l's weights are those producing z_l.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab.activations import Spec
from actlab.signatures import reject_unknown


class ModelError(ValueError):
    """A bad model name, parameter or model/dataset combination (one line)."""


@dataclasses.dataclass(frozen=True)
class Model:
    """A built model plus the functions the engine needs from it."""

    module: nn.Module
    specs: tuple[Spec, ...]
    layer_sqnorms: Callable[[Mapping[str, Any]], tuple[jax.Array, jax.Array]]

    @property
    def num_layers(self) -> int:
        return len(self.specs)

    def init(self, key: jax.Array, x: jax.Array) -> tuple[Any, dict]:
        variables = self.module.init({"params": key, "dropout": key}, x)
        params = variables.pop("params")
        return params, dict(variables)

    def apply(self, params, state, x, eps=None, capture: bool = False, train: bool = False,
              rng=None):
        variables = {"params": params, **(state or {})}
        rngs = {"dropout": rng} if rng is not None else {}
        if train and state:
            (logits, aux), new = self.module.apply(variables, x, eps, capture, train, rngs=rngs,
                                                   mutable=list(state))
            return logits, aux, dict(new)
        logits, aux = self.module.apply(variables, x, eps, capture, train, rngs=rngs)
        return logits, aux, state

    def activation_params(self, params: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Learned activation parameters, e.g. prelu_alpha -> [L] or prelu_alpha/3 -> scalar."""
        out: dict[str, jax.Array] = {}
        for key, v in params.items():
            if not key.startswith("act"):
                continue
            head, _, pname = key.partition("_")
            if head == "act":  # stacked over all layers (homogeneous MLP)
                out[f"{self.specs[0].name}_{pname}"] = v
            elif head[3:].isdigit():
                l = int(head[3:])
                out[f"{self.specs[l].name}_{pname}/{l}"] = jnp.mean(v)
        return out


def act_site(module: nn.Module, l: int, spec: Spec, z: jax.Array, eps, capture: bool,
             aux: dict[str, list]) -> jax.Array:
    """Apply layer l's activation inside a compact module: eps, learned params, capture."""
    learned = {p: module.param(f"act{l}_{p}", nn.initializers.constant(v), ())
               for p, v in spec.learned.items()}
    if eps is not None:
        z = z + eps[l]
    h = spec(z, **learned)
    if capture:
        aux["z"].append(z)
        aux["h"].append(h)
        aux["dphi"].append(spec.derivative(z, **learned))
    return h


def new_aux() -> dict[str, list]:
    return {"z": [], "h": [], "dphi": []}


def prefix_sqnorms(num_layers: int, prefix: str = "layer") -> Callable:
    """layer_sqnorms for modules whose layer-l weights live under '<prefix><l>'."""

    def sq(tree):
        return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))

    def fn(tree):
        per = jnp.stack([sq({k: v for k, v in tree.items()
                             if k == f"{prefix}{l}" or k.startswith(f"{prefix}{l}_")})
                         for l in range(num_layers)])
        return per, sq(tree["out"])

    return fn


_BUILDERS: dict[str, Callable[..., Model]] = {}
_SITES: dict[str, Callable[..., int]] = {}


def register(name: str, sites: Callable[..., int]):
    """Decorator: register a builder `fn(*, specs, num_classes, input_shape, init, **params)`.

    `sites(**params)` says how many activation sites the model has.
    """

    def deco(fn):
        _BUILDERS[name] = fn
        _SITES[name] = sites
        return fn

    return deco


def positive_int(key: str, v: Any, lo: int = 1) -> int:
    """Validate an integer model parameter (one-line ModelError otherwise)."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelError(f"model.{key} must be an integer, got {v!r}")
    if v < lo:
        raise ModelError(f"model.{key} must be >= {lo}, got {v}")
    return v


def fraction(key: str, v: Any) -> float:
    """Validate a rate in [0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ModelError(f"model.{key} must be in [0, 1), got {v!r}")
    return float(v)


def require_sequence_or_image(name: str, input_shape: tuple[int, ...]) -> None:
    """Conv and attention models need [T, C] or [H, W, C] inputs (or a long flat vector)."""
    if len(input_shape) < 2 and (len(input_shape) != 1 or input_shape[0] < 8):
        raise ModelError(f"model '{name}' needs sequence or image inputs; this dataset's "
                         f"inputs have shape {tuple(input_shape)} (use model=mlp)")


def choice(key: str, v: Any, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ModelError(f"unknown model.{key} '{v}'; choose from: {', '.join(options)}")
    return v


def names() -> list[str]:
    """Known model names."""
    return sorted(_BUILDERS)


def params_of(name: str) -> dict[str, Any]:
    """The model-specific parameters of `name` with their defaults."""
    sig = inspect.signature(_BUILDERS[name])
    wired = ("specs", "num_classes", "input_shape", "init", "num_users", "num_items")
    return {k: p.default for k, p in sig.parameters.items()
            if p.kind == p.KEYWORD_ONLY and k not in wired}


def check(name: str, params: Mapping[str, Any]) -> int:
    """Validate model `name` with `params`; return its number of activation sites."""
    if name not in _BUILDERS:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(names())}")
    known = params_of(name)
    reject_unknown("model", name, params, known, ModelError)
    return _SITES[name](**{**known, **params})


def build(name: str, *, specs: tuple[Spec, ...], num_classes: int, input_shape: tuple[int, ...],
          init: tuple[str, str, float] = ("he", "normal", 1.0), **params: Any) -> Model:
    """Build model `name` (see names()) for the given activations and data shape."""
    if name not in _BUILDERS:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(names())}")
    return _BUILDERS[name](specs=specs, num_classes=num_classes, input_shape=input_shape,
                           init=init, **params)


def _register_builtin() -> None:
    from actlab.models import cnn, mlp, recommender, resnet, transformer

    register("mlp", mlp._sites)(mlp.build)
    register("cnn", cnn.sites)(cnn.build)
    register("transformer", transformer.sites)(transformer.build)
    register("resnet", resnet.sites)(resnet.build)
    register("recommender", recommender.sites)(recommender.build)


_register_builtin()
