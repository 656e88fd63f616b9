"""The task sequence and plasticity sections: what the network learns over a run, and the
intervention that keeps it able to learn (actlab.data.tasks, actlab.engine.plasticity)."""

from __future__ import annotations

import dataclasses

from actlab.config.validate import field

TASKS = ("fixed", "continual")
TASK_KINDS = ("permuted_inputs", "shuffled_labels", "class_incremental", "noisy_inputs")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What the network learns: one fixed task, or a sequence of tasks (actlab.data.tasks).

    A continual run lasts num_tasks x steps_per_task steps (train.steps is set to that).
    """

    name: str = field("fixed", choices=TASKS)
    kind: str = field("permuted_inputs", choices=TASK_KINDS)
    num_tasks: int = field(10, lo=1)
    steps_per_task: int = field(500, lo=1)
    seed: int = field(0, lo=0)  # the tasks' stream (shared by every member)
    noise: float = field(1.0, lo=0.0)  # noisy_inputs: std of each task's additive pattern
    classes_per_task: int = field(2, lo=1)  # class_incremental: classes drawn per task

    @property
    def continual(self) -> bool:
        return self.name == "continual"

    @property
    def length(self) -> int:
        """Steps per task (0: one task for the whole run)."""
        return self.steps_per_task if self.continual else 0


PLASTICITY = ("none", "redo", "cbp", "shrink_perturb", "l2_init")


@dataclasses.dataclass(frozen=True)
class PlasticityConfig:
    """An intervention against lost plasticity (actlab.engine.plasticity), inside the step."""

    method: str = field("none", choices=PLASTICITY)
    # redo and shrink_perturb: steps between interventions (0: at the start of every task
    # after the first, task=continual)
    every: int = field(1000, lo=0)
    tau: float = field(0.1, lo=0.0)  # redo: a unit is dormant when its score is <= tau
    replacement_rate: float = field(1e-4, lo=0.0, hi=1.0)  # cbp: rho, units per step
    decay_rate: float = field(0.99, lo=0.0, hi=1.0, hi_open=True)  # cbp: eta of the utility
    maturity: int = field(100, lo=0)  # cbp: steps a unit lives before it can be replaced
    shrink: float = field(0.4, lo=0.0, hi=1.0)  # shrink_perturb: lambda
    perturb: float = field(0.1, lo=0.0)  # shrink_perturb: sigma, times a fresh init
    l2: float = field(1e-2, lo=0.0)  # l2_init: lambda of lambda ||theta - theta_0||^2
