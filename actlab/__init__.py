"""actlab: how activation functions shape training dynamics, measured in JAX.

The package is layered (imports run one way, checked by import-linter):
cli -> analysis -> runs -> engine -> measure | theory | sinks -> models | data ->
activations -> config. The flat module names of earlier releases (actlab.train,
actlab.step, actlab.plots, ...) still resolve, with a DeprecationWarning, for one release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
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
    "validate": "actlab.config.validate", "signatures": "actlab.config.validate",
    "data_tfds": "actlab.data.tfds",
    "quadrature": "actlab.theory.quadrature", "report": "actlab.analysis.report",
    "plots": "actlab.analysis.plots", "plotstyle": "actlab.analysis.plots.style",
    "plots_theory": "actlab.analysis.plots.theory",
    "plots_probes": "actlab.analysis.plots.probes",
}


def _moved(name: str) -> ModuleType:
    """The new home of old flat module `name`, with a warning (once per process)."""
    module = importlib.import_module(_MOVED[name])
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"actlab.{name} is now {_MOVED[name]}; the old name goes in the next "
                      f"release", DeprecationWarning, stacklevel=3)
    return module


_warned: set[str] = set()


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import actlab.train` / `from actlab.train import run`: the module's new home."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != "actlab" or name not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    _IDENTITY = ("__name__", "__spec__", "__loader__", "__package__", "__file__", "__path__")

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = _moved(spec.name.partition(".")[2])  # the real module, already executed
        # the import system writes the old name's spec over the module's: keep its own
        module.__dict__["_actlab_identity"] = {k: module.__dict__[k] for k in self._IDENTITY
                                               if k in module.__dict__}
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__.update(module.__dict__.pop("_actlab_identity", {}))


sys.meta_path.append(_OldNames())


def __getattr__(name: str) -> object:
    """`actlab.watch` (actlab.engine.watch.watch, imported when first asked for); `from
    actlab import train` and friends: the module's new home, with a warning."""
    if name == "watch":
        return importlib.import_module("actlab.engine.watch").watch
    if name not in _MOVED:
        raise AttributeError(f"module 'actlab' has no attribute {name!r}")
    return _moved(name)
