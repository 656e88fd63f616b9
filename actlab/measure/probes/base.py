"""What a probe is to the engine: its settings, its measurement function, its outputs.

A probe is a costlier measurement on its own interval (`probes.<name>.every` steps, on the
next log step). It is one module holding one `Probe`: a settings dataclass (fields with
`actlab.config.validate.field` rules; `every` is required), and `make(settings, model,
head)`, which returns the one-member measurement `fn(params, model_state, x, y, key) ->
{key: array}` run on the fixed probe batch in evaluation mode. Its record keys start with
`<name>/`; an [L] array named `<key>_layer` becomes scalars `<key>/<l>` (`per_layer`).
Outputs that are arrays rather than scalars (the Hessian's spectral density) are named in
`arrays` and written as JSON lines to `array_file` in the run directory instead of records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from actlab.models import Model
from actlab.models.base import PyTree

Measurement = Callable[..., dict[str, jax.Array]]  # (params, model_state, x, y, key) -> dict


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe: settings class, factory of its measurement, and where its arrays go."""

    name: str
    settings: type  # frozen dataclass with an `every` field (steps; 0: off)
    make: Callable[[Any, Model, Any], Measurement]  # (settings, model, head) -> measurement
    arrays: Mapping[str, str] = dataclasses.field(default_factory=dict)  # output key -> field
    array_file: str | None = None  # run-directory file of the arrays' JSON lines


LAYER_SUFFIX = "_layer"  # the name of an [L] array, one entry per layer


def per_layer(out: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """A probe's outputs with each [L] array `<key>_layer` split into scalars `<key>/<l>`.

    `<key>/<l>` is the record key of layer l (the per-layer metrics' convention), so a
    probe can report the whole-network `<key>` and its per-layer values side by side.
    """
    res = {}
    for k, v in out.items():
        if k.endswith(LAYER_SUFFIX):
            base = k[:-len(LAYER_SUFFIX)]
            res.update({f"{base}/{l}": v[l] for l in range(v.shape[0])})
        else:
            res[k] = v
    return res


def probe_loss(model: Model, head: Any, model_state: Any) -> Callable:
    """loss(params, x, y) in evaluation mode: deterministic and separable per example."""

    def loss(params: PyTree, x: jax.Array, y: jax.Array) -> jax.Array:
        return head.loss(model.apply(params, model_state, x)[0], y)

    return loss
