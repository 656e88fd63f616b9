"""The curvature probe: top-k eigenvalues, trace, spectral density and per-layer blocks of
the probe-batch loss's Hessian H, through Hessian-vector products (actlab.measure.probes
.estimators)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from actlab.config import ConfigError
from actlab.config.validate import field
from actlab.files import DENSITY_FILE
from actlab.measure.probes import estimators
from actlab.measure.probes.base import Measurement, Probe, per_layer, probe_loss
from actlab.models import Model
from actlab.models.base import PyTree


@dataclasses.dataclass(frozen=True)
class HessianSettings:
    """Curvature of the probe-batch loss: top-k eigenvalues, trace, density, layer blocks."""

    every: int = field(0, lo=0)  # steps between measurements (on the next log step); 0: off
    k: int = field(3, lo=1)  # largest eigenvalues recorded (hessian/eig_<i>)
    iters: int = field(20, lo=1)  # Lanczos steps (top-k, SLQ, per-layer blocks)
    samples: int = field(8, lo=2)  # Rademacher vectors (Hutchinson trace, SLQ density)

    def __post_init__(self) -> None:
        if self.k > self.iters:
            raise ConfigError(f"probes.hessian.k={self.k} must be <= probes.hessian.iters="
                              f"{self.iters} (Lanczos finds at most iters eigenvalues)")


def hessian_probe(params: Any, model_state: Any, x: jax.Array, y: jax.Array, key: jax.Array,
                  *, model: Model, head: Any, k: int = 1, iters: int = 20,
                  samples: int = 8) -> dict[str, jax.Array]:
    """Curvature of the probe-batch loss (H: its Hessian in the parameters).

    hessian/top_eig and hessian/eig_<i> (i < k): the largest eigenvalues of H (Lanczos,
    `iters` steps); hessian/trace, hessian/trace_se: Hutchinson's estimate of tr(H) from
    `samples` Rademacher vectors and its standard error; per layer l, hessian/top_eig/<l>
    and hessian/trace/<l> (with hessian/trace_se/<l>): the top eigenvalue and the trace
    of the diagonal block of layer l's weights; hessian/slq_nodes and
    hessian/slq_weights ([samples, iters]): the stochastic Lanczos quadrature of H's
    spectral density. Layer masks come from this member's parameters.
    """
    f = probe_loss(model, head, model_state)

    def loss(p: PyTree) -> jax.Array:
        return f(p, x, y)

    masks = estimators.layer_masks(model, params)
    k_eig, k_trace, k_slq, k_layer = jax.random.split(key, 4)
    out = {**estimators.hessian_eigs(loss, params, k_eig, k, iters),
           **estimators.hessian_trace(loss, params, k_trace, samples, masks),
           **estimators.hessian_slq(loss, params, k_slq, samples, iters),
           **estimators.hessian_layer_top_eig(loss, params, k_layer, masks, iters)}
    return per_layer(out)


def make(s: HessianSettings, model: Model, head: Any) -> Measurement:
    """The hessian probe bound to its settings."""
    return functools.partial(hessian_probe, model=model, head=head, k=s.k, iters=s.iters,
                             samples=s.samples)


PROBE = Probe("hessian", HessianSettings, make,
              arrays={"hessian/slq_nodes": "nodes", "hessian/slq_weights": "weights"},
              array_file=DENSITY_FILE)
