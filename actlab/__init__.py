"""actlab: how activation functions shape training dynamics, measured in JAX.

The package is layered (imports run one way, checked by import-linter):
cli -> analysis -> runs -> engine -> measure | theory | sinks -> models | data ->
activations -> config. The flat module names of earlier releases (actlab.train,
actlab.step, actlab.plots, ...) still resolve, with a DeprecationWarning, for one release.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

# old flat module -> where it lives now
_MOVED = {
    "train": "actlab.runs.driver", "step": "actlab.engine.step",
    "experiment": "actlab.engine.experiment", "program": "actlab.engine.loop",
    "schedule": "actlab.engine.cadence", "optim": "actlab.engine.optim",
    "devices": "actlab.engine.devices", "axes": "actlab.engine.axes",
    "heads": "actlab.measure.heads", "metrics": "actlab.measure.metrics",
    "probes": "actlab.measure.probes.estimators", "spectra": "actlab.measure.probes.spectra",
    "summary": "actlab.runs.records", "rundir": "actlab.runs.rundir",
    "checkpoint": "actlab.runs.checkpoint", "replay": "actlab.runs.retrain",
    "sweeps": "actlab.runs.sweeps", "writers": "actlab.sinks",
    "tensorboard_sink": "actlab.sinks.tensorboard", "init": "actlab.models.initializers",
    "validate": "actlab.config.validate", "data_tfds": "actlab.data.tfds",
    "quadrature": "actlab.theory.quadrature", "report": "actlab.analysis.report",
    "plots": "actlab.analysis.plots", "plotstyle": "actlab.analysis.plots.style",
    "plots_theory": "actlab.analysis.plots.theory",
    "plots_probes": "actlab.analysis.plots.probes",
}


def __getattr__(name: str) -> ModuleType:
    """`from actlab import train` and friends: the module's new home, with a warning."""
    if name not in _MOVED:
        raise AttributeError(f"module 'actlab' has no attribute {name!r}")
    warnings.warn(f"actlab.{name} is now {_MOVED[name]}; the old name goes in the next "
                  f"release", DeprecationWarning, stacklevel=2)
    return importlib.import_module(_MOVED[name])
