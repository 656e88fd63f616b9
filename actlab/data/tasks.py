"""Task sequences: one run, several tasks, each a transform of the dataset drawn on the device.

With `task=continual` a run trains on `num_tasks` tasks of `steps_per_task` steps each; step s
belongs to task s // steps_per_task (the final measurement, at the last step, to the last
task). Task t's transform is drawn from its own stream, fold_in(PRNGKey(task.seed), t),
inside the compiled program (nothing is done on the host per task), and every member meets
the same tasks. The first task draws its transform like the others. Kinds:

- permuted_inputs: a random permutation of the input features (all of an example's values,
  flattened; Goodfellow et al. 2013, Dohare et al. 2024's online permuted MNIST);
- shuffled_labels: a random permutation of the classes, applied to every label of the train
  and test splits (label-permuted tasks: the inputs stay, what they mean changes);
- class_incremental: `classes_per_task` classes drawn for the task; its batches hold only
  examples of those classes and its evaluation counts only their test examples (labels keep
  their values, so the output layer is shared);
- noisy_inputs: a Gaussian pattern of std `noise` (inputs are standardised), one value per
  input feature, added to every input of the task.

The probe batch (train/* and the per-layer metrics) is transformed like the inputs and labels
of the current task; under class_incremental it keeps every class.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from actlab.config import TaskConfig
from actlab.data.base import DataError, Dataset

Params = dict[str, jax.Array]  # one task's transform


@dataclasses.dataclass(frozen=True)
class Tasks:
    """A task sequence over a dataset's shapes (static: the arrays are drawn per task)."""

    config: TaskConfig
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def continual(self) -> bool:
        return self.config.continual

    @property
    def kind(self) -> str:
        return self.config.kind

    def index(self, step: jax.Array) -> jax.Array:
        """The task of step `step` (int32; the final step belongs to the last task)."""
        if not self.continual:
            return jnp.zeros((), jnp.int32)
        t = jnp.asarray(step, jnp.int32) // self.config.steps_per_task
        return jnp.minimum(t, self.config.num_tasks - 1)

    def params(self, t: jax.Array) -> Params:
        """Task t's transform (no arrays for a fixed task)."""
        if not self.continual:
            return {}
        key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), t)
        d = math.prod(self.input_shape)
        c = self.config
        if c.kind == "permuted_inputs":
            return {"perm": jax.random.permutation(key, d)}
        if c.kind == "shuffled_labels":
            return {"classes": jax.random.permutation(key, self.num_classes)}
        if c.kind == "class_incremental":
            return {"classes": jax.random.permutation(key, self.num_classes)[:c.classes_per_task]}
        return {"pattern": c.noise * jax.random.normal(key, (d,), jnp.float32)}

    def inputs(self, x: jax.Array, tp: Params) -> jax.Array:
        """Inputs [B, *input_shape] as task `tp` shows them."""
        if "perm" in tp:
            flat = x.reshape(x.shape[0], -1)
            return flat[:, tp["perm"]].reshape(x.shape)
        if "pattern" in tp:
            return x + tp["pattern"].reshape(self.input_shape).astype(x.dtype)
        return x

    def labels(self, y: jax.Array, tp: Params) -> jax.Array:
        """Labels as task `tp` names them (shuffled_labels: y -> classes[y])."""
        if self.continual and self.kind == "shuffled_labels":
            return tp["classes"][y]
        return y

    def weights(self, y: jax.Array, tp: Params) -> jax.Array | None:
        """Which examples count in the task's evaluation (class_incremental; None: all)."""
        if self.by_class:
            return jnp.any(y[:, None] == tp["classes"][None, :], axis=1).astype(jnp.float32)
        return None

    def view(self, x: jax.Array, y: jax.Array, tp: Params) -> tuple[jax.Array, jax.Array]:
        """A split (or batch) as the task shows it."""
        return self.inputs(x, tp), self.labels(y, tp)

    @property
    def by_class(self) -> bool:
        """Whether the task's batches are drawn by class (class_incremental; `draw`), rather
        than as the run's batches shown through `view`."""
        return self.continual and self.kind == "class_incremental"

    def draw(self, key: jax.Array, d: dict[str, jax.Array], batch_size: int,
             tp: Params) -> tuple[jax.Array, jax.Array]:
        """A class_incremental task's batch: a class of the task drawn uniformly, then one of
        its examples (with replacement)."""
        k_class, k_example = jax.random.split(key)
        c = tp["classes"][jax.random.randint(k_class, (batch_size,), 0, tp["classes"].shape[0])]
        j = jax.random.randint(k_example, (batch_size,), 0, d["class_count"][c])
        idx = d["class_index"][c, j]
        return d["x_train"][idx], d["y_train"][idx]

    def starts(self, step: jax.Array) -> jax.Array:
        """Whether `step` is a task's first step (of the run, for a fixed task)."""
        if not self.continual:
            return step == 0
        n = self.config.steps_per_task
        return (step % n == 0) & (step // n < self.config.num_tasks)

    def arrays(self, ds: Dataset) -> dict[str, np.ndarray]:
        """Device arrays the task's batches need (class_incremental: examples by class)."""
        if not self.by_class:
            return {}
        y = np.asarray(ds.y_train)
        by_class = [np.flatnonzero(y == c) for c in range(self.num_classes)]
        width = max(len(i) for i in by_class)
        index = np.zeros((self.num_classes, width), np.int32)
        for c, i in enumerate(by_class):
            index[c, :len(i)] = i
        return {"class_index": index,
                "class_count": np.asarray([len(i) for i in by_class], np.int32)}


def make(config: TaskConfig, ds: Dataset) -> Tasks:
    """The task sequence of `config` over dataset `ds` (one-line DataError if it cannot be)."""
    if config.continual:
        if ds.task != "classification":
            raise DataError(f"task=continual needs a classification dataset; '{ds.name}' "
                            f"holds {ds.task}s")
        if config.kind == "class_incremental":
            if config.classes_per_task > ds.num_classes:
                raise DataError(f"task.classes_per_task={config.classes_per_task} exceeds "
                                f"dataset '{ds.name}''s {ds.num_classes} classes")
            missing = sorted(set(range(ds.num_classes)) - set(np.unique(ds.y_train).tolist()))
            if missing:
                raise DataError(f"task.kind=class_incremental: classes {missing} have no "
                                f"training example in dataset '{ds.name}'")
    return Tasks(config=config, num_classes=ds.num_classes, input_shape=ds.input_shape)


def describe(config: TaskConfig) -> dict[str, Any]:
    """What summary.json says about the sequence."""
    return {"name": config.name, "kind": config.kind if config.continual else None,
            "num_tasks": config.num_tasks if config.continual else 1,
            "steps_per_task": config.steps_per_task if config.continual else None}
