"""Typed, validated configuration: section dataclasses, their rules, member axes and targets.

Pure Python (no jax): the bottom layer, importable by everything else.
"""

from actlab.config.sections import (  # noqa: F401
    DISTRIBUTIONS,
    HEADS,
    INIT_SCHEMES,
    LOSSES,
    METRICS,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    SECTIONS,
    TARGET_KEYS,
    WANDB_KEYS,
    WANDB_MODES,
    ActivationConfig,
    Config,
    DatasetConfig,
    InitConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    ProbesConfig,
    Target,
    TrainConfig,
    parse_target,
)
from actlab.config.tasks import (  # noqa: F401
    PLASTICITY,
    TASK_KINDS,
    TASKS,
    PlasticityConfig,
    TaskConfig,
)
from actlab.config.validate import ConfigError  # noqa: F401
