"""The weight-spectrum probe: spectral norm, stable rank and power-law alpha of each layer's
kernel (actlab.measure.probes.spectra)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from actlab.config.validate import field
from actlab.measure.probes import spectra
from actlab.measure.probes.base import Measurement, Probe, per_layer
from actlab.models import Model


@dataclasses.dataclass(frozen=True)
class WeightsSettings:
    """Spectra of the layers' weight matrices."""

    every: int = field(0, lo=0)  # steps between measurements (on the next log step); 0: off


def weights_probe(params: Any, model_state: Any, x: jax.Array, y: jax.Array, key: jax.Array,
                  *, model: Model, head: Any) -> dict[str, jax.Array]:
    """weights/spectral_norm/<l>, weights/stable_rank/<l>, weights/alpha/<l> of each layer's
    kernel as a [fan_in, out] matrix; data and key are unused."""
    return per_layer(spectra.weight_spectra(spectra.layer_kernels(model, params)))


def make(s: WeightsSettings, model: Model, head: Any) -> Measurement:
    """The weights probe (no settings besides its interval)."""
    return functools.partial(weights_probe, model=model, head=head)


PROBE = Probe("weights", WeightsSettings, make)
