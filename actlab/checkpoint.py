"""Orbax checkpoints of the training state in `<run dir>/checkpoints/<step>/`.

Orbax writes each step into a temporary directory and renames it when the
save is complete, so a process killed during a save leaves either the previous
complete checkpoints or the new one, never a half-written one that restores
wrong; leftovers of interrupted saves are removed when the manager opens.
The state is copied to host memory before the (asynchronous) write, so the
training loop may donate its device buffers right after `save` returns.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
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
        """Start saving `state` (copied to host now, written in the background)."""
        host = jax.tree.map(np.asarray, jax.device_get(state))
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


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint in a run directory, without opening a manager."""
    d = Path(run_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return None
    steps = [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None
