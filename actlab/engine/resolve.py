"""A config checked against the registries and completed with their defaults.

`actlab.config` validates what it can without the registries (it imports no jax);
`resolve` does the rest: the activation, model and dataset exist and take the given
parameters (their defaults filled in, so `to_dict` is the full configuration), the
per-layer activations match the model's layers, vmapped activation parameters exist,
the sinks are registered and each `probes.<name>` section fits its probe's settings.
Resolving twice is resolving once.
"""

from __future__ import annotations

import dataclasses

from actlab import activations, data, models, sinks
from actlab.config import Config, ConfigError, ModelConfig, ProbesConfig
from actlab.config.axes import AxisError
from actlab.engine import axes
from actlab.errors import UserError
from actlab.measure import probes


def resolve(config: Config) -> Config:
    """`config` checked against the registries, with their defaults filled in."""
    if config.resolved:
        return config
    try:
        act = config.activation
        activations.spec(act.name, **act.params)
        model = _model(config)
        ds = config.dataset
        data.check(ds.name, ds.params)
        ds = dataclasses.replace(ds, params={**data.params_of(ds.name), **ds.params})
        for a in config.train.vmap:
            axes.check(a, {"name": act.name, **act.params})
        for s in config.logger.sinks:
            sinks.get(s)
        probe_settings = probes.settings(config.probes.settings)
    except (AxisError, activations.ActivationError, models.ModelError, data.DataError) as e:
        raise ConfigError(str(e)) from None
    train = config.train
    if config.task.continual:  # a sequence lasts its tasks
        train = dataclasses.replace(train, steps=config.task.num_tasks * config.task.steps_per_task)
    elif config.plasticity.method in ("redo", "shrink_perturb") and config.plasticity.every == 0:
        raise ConfigError(f"plasticity.every=0 runs {config.plasticity.method} at each new task; "
                          f"with one task (task=fixed) give plasticity.every > 0")
    return dataclasses.replace(config, model=model, dataset=ds, train=train,
                               probes=ProbesConfig(probe_settings), resolved=True)


def _model(config: Config) -> ModelConfig:
    m = config.model
    name = m.name
    if name not in models.names():
        raise ConfigError(f"unknown model.name '{name}'; choose from: {', '.join(models.names())}")
    n = models.check(name, m.params)
    acts = m.activations
    if acts is not None:
        if len(acts) != n:
            raise ConfigError(f"model.activations has {len(acts)} entries but model '{name}' "
                              f"has {n} activation layers")
        for a in acts:
            try:
                activations.spec(a)
            except UserError as e:
                raise ConfigError(f"model.activations: {e}") from None
    return dataclasses.replace(m, params={**models.params_of(name), **m.params}, num_layers=n)
