"""The gradient-noise-scale probe: B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018)
from per-example gradients of the probe batch."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from actlab.config.validate import field
from actlab.measure.probes import estimators
from actlab.measure.probes.base import Measurement, Probe, probe_loss
from actlab.models import Model


@dataclasses.dataclass(frozen=True)
class GradientProbeSettings:
    """A probe from per-example gradients (noise_scale, gsnr)."""

    every: int = field(0, lo=0)  # steps between measurements (on the next log step); 0: off
    chunk: int = field(64, lo=1)  # examples per vectorised slice of per-example gradients


def noise_probe(params: Any, model_state: Any, x: jax.Array, y: jax.Array, key: jax.Array,
                *, model: Model, head: Any, chunk: int) -> dict[str, jax.Array]:
    """noise_scale/* on the probe batch (the key is unused: the probe batch is fixed)."""
    return estimators.noise_scale(probe_loss(model, head, model_state), params, x, y, chunk)


def make(s: GradientProbeSettings, model: Model, head: Any) -> Measurement:
    """The noise_scale probe bound to its settings."""
    return functools.partial(noise_probe, model=model, head=head, chunk=s.chunk)


PROBE = Probe("noise_scale", GradientProbeSettings, make)
