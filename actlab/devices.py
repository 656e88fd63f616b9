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
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MEMBERS, DATA = "members", "data"


class ShardError(ValueError):
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
        spec = NamedSharding(self.mesh, PartitionSpec(DATA))
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, spec), tree)


def layout(shard: str, members: int, batch_size: int) -> Layout:
    """The device layout for train.shard with this many members."""
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
    state = jax.device_put(state, NamedSharding(lay.mesh, rows))
    return state, jax.device_put(d, NamedSharding(lay.mesh, PartitionSpec()))
