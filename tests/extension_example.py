"""A probe and a sink defined outside actlab, as a user would (used by test_extending.py).

The probe `param_sq` measures the squared L2 norm of all parameters and, as an array kept
out of the records, that of each parameter leaf; the sink `spy` keeps what it is sent.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from actlab.config.validate import field
from actlab.measure.probes.base import Probe
from actlab.sinks.base import Writer


@dataclasses.dataclass(frozen=True)
class ParamSqSettings:
    every: int = field(0, lo=0)  # steps between measurements; 0: off
    scale: float = field(1.0, lo=0.0, lo_open=True)  # multiplies the result


def param_sq(params: Any, model_state: Any, x: jax.Array, y: jax.Array, key: jax.Array, *,
             scale: float) -> dict[str, jax.Array]:
    leaves = jnp.stack([jnp.sum(jnp.square(a)) for a in jax.tree.leaves(params)])
    return {"param_sq/total": scale * jnp.sum(leaves), "param_sq/per_leaf": scale * leaves}


def make(settings: ParamSqSettings, model: Any, head: Any):
    return functools.partial(param_sq, scale=settings.scale)


PROBE = Probe("param_sq", ParamSqSettings, make, arrays={"param_sq/per_leaf": "per_leaf"},
              array_file="param_sq.jsonl")


class SpyWriter(Writer):
    """Keeps every record, summary and histogram step it is sent."""

    seen: list[SpyWriter] = []

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.summaries: list[tuple[dict[str, Any], bool]] = []
        self.histogram_steps: list[tuple[int, list[str]]] = []
        self.closed = False
        SpyWriter.seen.append(self)

    def write_records(self, records: list[dict[str, Any]]) -> None:
        self.records += records

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        self.summaries.append((summary, final))

    def write_histograms(self, step: int, arrays: Any) -> None:
        self.histogram_steps.append((step, sorted(arrays)))

    def close(self, failed: bool = False) -> None:
        self.closed = True


def make_spy(run_dir: Any, **context: Any) -> Writer:
    return SpyWriter()
