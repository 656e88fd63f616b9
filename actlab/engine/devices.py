"""How a run spreads over devices (train.shard): a mesh of members x data.

- members: the members (seeds x grid) are split over the devices; they are independent,
  so the program needs no communication and gives a single device's numbers.
- batch: a 2-D mesh ("members", "data") over every device of every process, with
  m = gcd(members, devices) rows; each member's batch, probe batch and evaluation split
  are split over the "data" axis (each device computes its part of every reduction over
  examples; XLA inserts the all-reduces, e.g. of the gradient). The numbers are those of
  one device up to float reassociation.
- auto: members when their count is a multiple of the local device count, else none.
- none: everything on one device.

Several processes (multi-host) join JAX's distributed runtime through `initialize`:
under SLURM with more than one task, or with ACTLAB_COORDINATOR (host:port),
ACTLAB_NUM_PROCESSES and ACTLAB_PROCESS_ID set. Every process runs the same program on
its devices of one global mesh (auto becomes batch); process 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from actlab.errors import UserError

MEMBERS, DATA = "members", "data"


class ShardError(UserError):
    """A train.shard setting the devices or the batch cannot honour (one line)."""


@dataclasses.dataclass(frozen=True)
class Layout:
    mesh: Mesh | None = None  # None: one device

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    @property
    def splits_batch(self) -> bool:
        return self.mesh is not None and self.mesh.shape.get(DATA, 1) > 1

    @property
    def splits_members(self) -> bool:
        return self.mesh is not None and self.mesh.shape.get(MEMBERS, 1) > 1

    def shape(self) -> dict[str, int]:
        return {} if self.mesh is None else dict(self.mesh.shape)

    def constrain_batch(self, tree: Any) -> Any:
        """Inside the program: split the leading (example) axis of every array over "data"."""
        if not self.splits_batch:
            return tree
        assert self.mesh is not None  # splits_batch: there is a mesh
        spec = NamedSharding(self.mesh, PartitionSpec(DATA))
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, spec), tree)


_JOINED = False


def initialize() -> bool:
    """Join JAX's distributed runtime when this process is one of several (see the module
    docstring); a no-op otherwise, and after the first call. On CPU the processes' collectives
    go through gloo. Returns whether this process is part of a multi-process run."""
    global _JOINED
    explicit = os.environ.get("ACTLAB_COORDINATOR")
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ
    if _JOINED or not (explicit or slurm):
        return jax.process_count() > 1
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        if explicit:
            jax.distributed.initialize(explicit, int(os.environ["ACTLAB_NUM_PROCESSES"]),
                                       int(os.environ["ACTLAB_PROCESS_ID"]))
        else:
            jax.distributed.initialize()  # SLURM: coordinator and ranks from its variables
    except (KeyError, ValueError, RuntimeError) as e:
        raise ShardError(f"cannot join the distributed runtime: {e}") from None
    _JOINED = True
    return jax.process_count() > 1


def primary() -> bool:
    """Whether this process writes (run directory, W&B, progress): process 0."""
    return jax.process_index() == 0


def broadcast(values: tuple[int, ...]) -> tuple[int, ...]:
    """Process 0's integers, on every process (the same decision everywhere)."""
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils

    got = multihost_utils.broadcast_one_to_all(np.asarray(values, np.int64))
    return tuple(int(v) for v in np.asarray(got))


def layout(shard: str, members: int, batch_size: int) -> Layout:
    """The device layout for train.shard with this many members."""
    if shard == "auto" and jax.process_count() > 1:
        shard = "batch"
    if shard == "none":
        return Layout()
    if shard == "batch":
        devices = jax.devices()  # every process's
        m = math.gcd(members, len(devices))
        data = len(devices) // m
        if data > 1 and batch_size % data:
            raise ShardError(f"train.shard=batch splits each batch over {data} devices; "
                             f"train.batch_size={batch_size} is not a multiple of {data}")
        return Layout(Mesh(np.asarray(devices).reshape(m, data), (MEMBERS, DATA)))
    devices = jax.local_devices()
    if len(devices) < 2 or members % len(devices):
        if shard == "members" and len(devices) > 1:
            raise ShardError(f"train.shard=members needs a member count that is a multiple of "
                             f"the {len(devices)} devices; this run has {members}")
        return Layout()
    return Layout(Mesh(np.asarray(devices).reshape(-1, 1), (MEMBERS, DATA)))


def place(state: Any, d: dict[str, Any], lay: Layout) -> tuple[Any, dict[str, Any]]:
    """Put the stacked member state and the device data where the layout wants them: the
    state's leading (member) axis over "members", the data replicated (the program splits
    the batches it draws)."""
    if lay.mesh is None:
        return state, d
    rows = PartitionSpec(MEMBERS) if lay.splits_members else PartitionSpec()
    if jax.process_count() > 1:  # a global mesh: each process fills its devices' parts
        return _global(state, NamedSharding(lay.mesh, rows)), _global(
            d, NamedSharding(lay.mesh, PartitionSpec()))
    state = jax.device_put(state, NamedSharding(lay.mesh, rows))
    return state, jax.device_put(d, NamedSharding(lay.mesh, PartitionSpec()))


def _global(tree: Any, sharding: NamedSharding) -> Any:
    """Global arrays from the same host values on every process (no cross-process check:
    NaN constants would fail an equality test)."""
    def one(a: jax.Array) -> jax.Array:
        host = np.asarray(jax.device_get(a))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def replicated(lay: Layout) -> NamedSharding | None:
    """Where a program's measurements go: on every device, so each process can read them
    (None: wherever XLA puts them, for a single process)."""
    if lay.mesh is None or jax.process_count() == 1:
        return None
    return NamedSharding(lay.mesh, PartitionSpec())


def state_sharding(lay: Layout) -> NamedSharding:
    assert lay.mesh is not None  # only asked of a layout over several devices (replicated)
    return NamedSharding(lay.mesh, PartitionSpec(MEMBERS) if lay.splits_members
                         else PartitionSpec())
