"""Typed, validated configuration: section dataclasses, their rules and targets (pure Python, no
jax)."""

from actlab.config.sections import (  # noqa: F401
    HEADS,
    LOSSES,
    OBJECTIVES,
    OPTIMIZERS,
    PROBE_SECTIONS,
    PROBES,
    SCHEDULES,
    SECTIONS,
    SINKS,
    TARGET_KEYS,
    WANDB_KEYS,
    WANDB_MODES,
    ActivationConfig,
    Config,
    DatasetConfig,
    GradientProbeConfig,
    HessianProbeConfig,
    InitConfig,
    LoggerConfig,
    ModelConfig,
    OptimizerConfig,
    ProbeConfig,
    ProbesConfig,
    Target,
    TrainConfig,
    WeightsProbeConfig,
    parse_target,
)
from actlab.config.validate import ConfigError  # noqa: F401
