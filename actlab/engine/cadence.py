"""Which steps are measured, evaluated, probed and checkpointed, and how calls group them.

Pure functions of the configuration's numbers, so every awkward combination
(steps not a multiple of log_every, intervals that do not divide each other, a
resume from the middle) can be tested without running anything.

- Log steps: 0, log_every, 2 log_every, ... and always the last step `steps`; with a task
  sequence (task_length > 0) also every task's first step, so a call's plain steps never
  cross from one task into the next.
- A periodic measurement with interval e (evaluation, each probe, checkpoints)
  happens on the first log step at or after each multiple of e, and for
  evaluation and probes also at step 0 and at the end (e = 0: only then).
- Task ends (TASK_END, a sequence only): at each multiple of task_length after step 0, the
  network the finished task left is evaluated on its test split and the first task's.
- Checkpoints: on the log steps due by checkpoint_every, and at the end.
- A program call runs `per_call` log steps: each a measured step then the plain
  steps up to the next log step. A checkpoint step starts a new call, so the
  state saved is the state before that step's measurement.
- The compiled program runs a slot's plain steps in loops whose trip counts are
  compile-time constants (`loops`): the count of most slots, log_every - 1 where
  log_every divides the run, as one loop; the counts of the others (the remainder of
  steps not a multiple of log_every, task starts off the log grid) as loops of their own,
  or as loops of powers of two that add up to them (`split`) where those are fewer. One
  program serves the whole run, a resumed one included.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Slot:
    """One log step of a call: measure at `step`, then `n_plain` plain steps."""

    step: int
    n_plain: int
    apply: bool  # False for the final measurement (its update is not applied)
    on: Mapping[str, bool]  # which periodic measurements (eval, probes) run here


@dataclasses.dataclass(frozen=True)
class Call:
    """One program call: up to per_call slots; save a checkpoint before it when asked."""

    slots: tuple[Slot, ...]
    checkpoint: bool = False

    @property
    def steps_done(self) -> int:
        """Updates applied by the call."""
        return sum(s.n_plain + s.apply for s in self.slots)


TASK_END = "task_end"  # the periodic measurement at each task's end (a task sequence)


def log_steps(steps: int, log_every: int, task_length: int = 0) -> list[int]:
    """Every log step: multiples of log_every (and of task_length) below `steps`, then
    `steps` itself."""
    ts = set(range(0, steps, log_every))
    if task_length > 0:
        ts |= set(range(0, steps, task_length))
    return sorted(ts) + [steps]


def due(every: int, steps: list[int], j: int, ends: bool = True) -> bool:
    """Whether the measurement with interval `every` runs at log step steps[j].

    True on the first log step at or after each multiple of `every`; with `ends`,
    also at the first and the last log step.
    """
    t = steps[j]
    if ends and (j == 0 or j == len(steps) - 1):
        return True
    return every > 0 and j > 0 and t // every > steps[j - 1] // every


def plan(steps: int, log_every: int, every: Mapping[str, int], checkpoint_every: int = 0,
         per_call: int = 1, start: int | None = None, task_length: int = 0) -> list[Call]:
    """The program calls of a run (from log step `start` when resuming).

    `every` maps each periodic measurement (eval, probe names) to its interval; with
    task_length > 0 (a task sequence) the slots also say when TASK_END runs.
    """
    ts = log_steps(steps, log_every, task_length)
    j0 = ts.index(start) if start is not None else 0
    calls: list[Call] = []
    current: list[Slot] = []
    ckpt = False
    for j in range(j0, len(ts)):
        t = ts[j]
        final = j == len(ts) - 1
        save = checkpoint_every > 0 and j > j0 and due(checkpoint_every, ts, j)
        if current and (save or len(current) == per_call):
            calls.append(Call(tuple(current), ckpt))
            current, ckpt = [], False
        if save:
            ckpt = True
        on = {k: due(e, ts, j) for k, e in every.items()}
        if task_length > 0:
            on[TASK_END] = t > 0 and t % task_length == 0
        current.append(Slot(t, 0 if final else ts[j + 1] - t - 1, not final, on))
    calls.append(Call(tuple(current), ckpt))
    return calls


def loops(n_plain: Iterable[int]) -> tuple[int, ...]:
    """The trip counts of the loops a program runs the plain steps of slots with these
    counts in, each at most once per slot (empty: no slot has plain steps)."""
    counts = collections.Counter(n for n in n_plain if n)
    if not counts:
        return ()
    main = max(counts, key=lambda n: (counts[n], n))  # the most slots' count
    rest = sorted(set(counts) - {main}, reverse=True)
    bits = sorted({1 << b for n in rest for b in range(n.bit_length()) if n >> b & 1},
                  reverse=True)
    extra = rest if len(rest) <= len(bits) else bits
    return (main, *(n for n in extra if n != main))


def split(n_plain: int, sizes: tuple[int, ...]) -> tuple[bool, ...]:
    """Which of the loops of `sizes` (from `loops`) run a slot's `n_plain` plain steps:
    the one of that count, or those of its binary digits."""
    if n_plain in sizes:
        return tuple(i == sizes.index(n_plain) for i in range(len(sizes)))
    on = tuple((s & (s - 1)) == 0 and (n_plain & s) != 0 for s in sizes)  # powers of 2
    if sum(s for s, o in zip(sizes, on, strict=True) if o) != n_plain:
        raise ValueError(f"{n_plain} plain steps are not made of the loops {sizes}")
    return on


def plain_steps(steps: Iterable[int], counts: Iterable[int]) -> np.ndarray:
    """Every plain step of the slots at `steps` with `counts` plain steps."""
    return np.concatenate([np.arange(t + 1, t + 1 + n, dtype=np.int64)
                           for t, n in zip(steps, counts, strict=True)] or [np.zeros(0, int)])


def program_slots(calls: list[Call]) -> int:
    """Slots of the run's program: its longest call (shorter calls are padded)."""
    return max(len(c.slots) for c in calls)


def auto_per_call(log_every: int, steps_per_call: int = 100, most: int = 16) -> int:
    """Log steps per call so that a call covers about `steps_per_call` steps (1 to `most`)."""
    return max(1, min(most, math.ceil(steps_per_call / log_every)))


class Every:
    """True at most once every `seconds` (the first call included)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter):
        self.seconds, self.clock = seconds, clock
        self.last = -math.inf

    def __call__(self) -> bool:
        now = self.clock()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False
