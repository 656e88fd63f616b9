"""Retrain a configuration deterministically and look inside it at chosen steps.

Batches are keyed by the step number, so the trajectory does not depend on how
steps were grouped into program calls: the snapshots equal the original run's
parameters. Used by the report for distributions and decision boundaries.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from actlab import data
from actlab.config import Config
from actlab.engine import loop as program
from actlab.engine.cadence import Call, Slot
from actlab.engine.experiment import Experiment, build, device_data, initial_state


def retrain(config: Config, steps: list[int],
           dataset: data.Dataset | None = None) -> tuple[Experiment, dict[int, Any]]:
    """Retrain `config` (nothing written) and snapshot it at `steps`.

    Each snapshot is {"params": ..., "model_state": ...} with a leading member axis.
    """
    exp = build(config, dataset)
    d, call = device_data(exp), program.make_program(exp)
    names = program.measurement_names(exp)
    state = initial_state(exp)
    snaps: dict[int, Any] = {}
    t = 0
    for s in sorted({int(s) for s in steps if 0 <= s <= config.train.steps}):
        if s > t:
            plan = program.plan_arrays(Call((Slot(t, s - t - 1, True, {}),)), 1, names)
            state, _ = call(state, d, plan)
            t = s
        snaps[s] = jax.device_get({"params": state.params, "model_state": state.model_state})
    return exp, snaps


def forward(exp: Experiment, snapshot: Any, x: np.ndarray, member: int = 0) -> dict[str, Any]:
    """Output probabilities and per-layer z, h, phi' of one member (eval mode) on inputs x."""
    snap = jax.tree.map(lambda a: jnp.asarray(a[member]), snapshot)

    def fwd(snap, x):
        return exp.model.apply(snap["params"], snap["model_state"], x, capture=True)[:2]

    logits, aux = jax.jit(fwd)(snap, jnp.asarray(x))
    out = {k: (np.asarray(v) if not isinstance(v, list) else [np.asarray(a) for a in v])
           for k, v in aux.items()}
    out["probs"] = np.asarray(exp.head.probs(logits))
    return out


replay = retrain  # the name of earlier releases (deprecated)
