"""Costlier measurements on their own interval: one module per probe, one table of them.

Built in: hessian (curvature), noise_scale (gradient-noise scale), gsnr (gradient
signal-to-noise ratio), weights (weight spectra). `register(probe)` adds a user's probe
(see actlab.measure.probes.base for what a probe is); config's `probes.<name>` sections
are checked against the settings class of the probe registered under that name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from actlab.config import ConfigError
from actlab.config.validate import mapping, no_extra, section
from actlab.measure.probes import gsnr, hessian, noise_scale, weights
from actlab.measure.probes.base import Probe, per_layer, probe_loss  # noqa: F401
from actlab.measure.probes.estimators import density  # noqa: F401  (SLQ smoothing)
from actlab.registry import Registry

_PROBES: Registry[Probe] = Registry("probe", {
    p.name: p for p in (hessian.PROBE, noise_scale.PROBE, gsnr.PROBE, weights.PROBE)
}, error=ConfigError)


def register(probe: Probe) -> Probe:
    """Add (or replace) a probe under its name; its settings must have an `every` field."""
    if "every" not in {f.name for f in dataclasses.fields(probe.settings)}:
        raise TypeError(f"probe {probe.name!r}: its settings {probe.settings.__name__} need an "
                        f"`every` field (steps between measurements; 0: off)")
    return _PROBES.add(probe.name, probe)


def names() -> list[str]:
    """Every registered probe name."""
    return _PROBES.names()


def get(name: str) -> Probe:
    """The probe registered under `name` (one-line error listing the others)."""
    return _PROBES.get(name)


def settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every registered probe's settings from the `probes` section (defaults where absent)."""
    no_extra("probes", given, names())
    return {name: section(p.settings, f"probes.{name}", mapping(given, name))
            for name, p in _PROBES.items()}


def fields(name: str) -> tuple[str, ...]:
    """The settings a probe takes (empty for a name no longer registered)."""
    return (tuple(f.name for f in dataclasses.fields(get(name).settings))
            if name in _PROBES else ())
