"""Orbax checkpoints of the training state in `<run dir>/checkpoints/<step>/`.

Orbax writes each step into a temporary directory and renames it when the
save is complete, so a process killed during a save leaves either the previous
complete checkpoints or the new one, never a half-written one that restores
wrong; leftovers of interrupted saves are removed when the manager opens.
The state is copied to host memory before the (asynchronous) write, so the
training loop may donate its device buffers right after `save` returns.

In a run of several processes (actlab.engine.devices) every process takes part in each save and
restore (orbax synchronises them through JAX's distributed client): arrays split over the
processes (e.g. the members under train.shard=batch) are first gathered whole onto every
process, then process 0 alone writes the host copy, so a checkpoint is the same whatever
the number of processes, and each process restores the whole state from it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from actlab.errors import UserError

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(UserError):
    """A checkpoint exists but cannot be restored (one line, with what to do)."""


def _quiet_absl() -> None:
    for name in ("absl", "orbax"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Checkpoints:
    """The run's checkpoint series: save every so often, keep the last `keep`."""

    def __init__(self, run_dir: str | os.PathLike, keep: int = 2):
        import orbax.checkpoint as ocp

        _quiet_absl()
        self._ocp = ocp
        self.dir = Path(run_dir).absolute() / CHECKPOINT_DIR
        self._mngr = ocp.CheckpointManager(
            self.dir, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, cleanup_tmp_directories=True))

    def latest(self) -> int | None:
        """The newest complete checkpoint's step (None if there is none)."""
        return self._mngr.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Start saving `state` (copied to host now, written in the background). With
        several processes, every process calls it at the same step."""
        host = jax.tree.map(np.asarray, jax.device_get(_whole(state)))
        self._mngr.save(step, args=self._ocp.args.StandardSave(host), force=True)

    def restore(self, step: int, like: Any) -> Any:
        """The state saved at `step`, with the structure, shapes and dtypes of `like`."""
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), like)
        try:
            return self._mngr.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax raises many kinds; all mean "this one is unusable"
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise CheckpointError(
                f"checkpoint {self.dir / str(step)} cannot be restored ({msg}); delete that "
                f"directory to fall back to an earlier one, or run with train.resume=false "
                f"to start fresh") from None

    def wait(self) -> None:
        """Block until pending saves are on disk."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()


def _identity(tree: Any) -> Any:
    return tree


def _whole(tree: Any) -> Any:
    """`tree` with each array that is split over processes (no process holds all of it)
    gathered whole onto every process; a collective when there is one: every process must
    call it with a like tree. Other leaves are returned as they are."""
    leaves, treedef = jax.tree.flatten(tree)
    split = [i for i, a in enumerate(leaves) if isinstance(a, jax.Array)
             and not a.is_fully_addressable and not a.is_fully_replicated]
    if not split:
        return tree
    if all(isinstance(leaves[i].sharding, NamedSharding) for i in split):
        # one program for all of them (XLA's all-gathers), compiled once per run
        whole = jax.jit(_identity, out_shardings=[
            NamedSharding(leaves[i].sharding.mesh, PartitionSpec()) for i in split])(
            [leaves[i] for i in split])
    else:
        from jax.experimental import multihost_utils

        whole = [multihost_utils.process_allgather(leaves[i], tiled=True) for i in split]
    for i, a in zip(split, whole, strict=True):
        leaves[i] = a
    return jax.tree.unflatten(treedef, leaves)  # treedef.unflatten: its stub is unresolved


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint in a run directory, without opening a manager."""
    d = Path(run_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return None
    steps = [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None
