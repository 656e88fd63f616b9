"""What a member is while it trains: its state (one pytree) and its random streams.

The engine stacks members on a leading axis; `member(state, i)` takes one out, so a
notebook can look at (or step) a single member of a vmapped run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flax
import jax

# Random streams, each folded into the member's key for step t: fold_in(key, t) draws
# the batch; these fold that step key once more.
STREAM_DROPOUT = 1
STREAM_PROBES = 2
STREAM_PLASTICITY = 3  # the interventions' draws (actlab.engine.plasticity)
MEMBER_AXIS = "member"  # the name of the vmapped member axis (collectives over members)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (one member; the engine stacks members)."""

    params: Any
    opt_state: Any
    model_state: Any  # non-parameter collections, e.g. batch-norm running statistics
    step: jax.Array  # int32: updates applied so far
    diverged_at: jax.Array  # int32: step of the first non-finite loss, -1 if none
    key: jax.Array  # the member's key for batches, folded with the step
    # metric constants per layer ([L] each): saturation bounds (NaN: never saturates)
    # and max |phi'|; they depend on vmapped activation parameters
    consts: dict[str, jax.Array]
    # what spans steps besides: "ref", the pre-activation mean and std per layer at the
    # current task's first step (preact drift), and "plastic", the intervention's state
    extra: dict[str, Any] = flax.struct.field(default_factory=dict)

    if TYPE_CHECKING:  # added by flax.struct.dataclass, which does not declare it
        def replace(self, **updates: Any) -> TrainState: ...


def step_key(state: TrainState) -> jax.Array:
    """The key of the state's current step (draws its batch)."""
    return jax.random.fold_in(state.key, state.step)


def stream_key(state: TrainState, stream: int) -> jax.Array:
    """A key of the current step for one use (STREAM_DROPOUT, STREAM_PROBES)."""
    return jax.random.fold_in(step_key(state), stream)


def member(state: TrainState, i: int) -> TrainState:
    """Member i of a state whose leaves are stacked on a leading member axis."""
    return jax.tree.map(lambda a: a[i], state)
