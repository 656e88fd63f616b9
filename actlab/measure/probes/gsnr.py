"""The gradient signal-to-noise-ratio probe (Liu et al. 2020), per layer and overall."""

from __future__ import annotations

import functools
from typing import Any

import jax

from actlab.measure.probes import estimators
from actlab.measure.probes.base import Measurement, Probe, per_layer, probe_loss
from actlab.measure.probes.noise_scale import GradientProbeSettings
from actlab.models import Model


def gsnr_probe(params: Any, model_state: Any, x: jax.Array, y: jax.Array, key: jax.Array,
               *, model: Model, head: Any, chunk: int) -> dict[str, jax.Array]:
    """gsnr/<l> (layer l's mean gradient signal-to-noise ratio) and gsnr/mean (over all
    parameters), from per-example gradients of the probe batch (the key is unused)."""
    out = estimators.gsnr(probe_loss(model, head, model_state), params, x, y,
                          estimators.layer_masks(model, params), chunk)
    return per_layer({"gsnr_layer": out["gsnr_layer"], "gsnr/mean": out["gsnr_mean"]})


def make(s: GradientProbeSettings, model: Model, head: Any) -> Measurement:
    """The gsnr probe bound to its settings."""
    return functools.partial(gsnr_probe, model=model, head=head, chunk=s.chunk)


PROBE = Probe("gsnr", GradientProbeSettings, make)
