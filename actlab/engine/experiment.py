"""A configuration made concrete: dataset, model, head, optimizer and the members grid."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from actlab import activations, data, models, theory
from actlab.config import Config
from actlab.config import axes as config_axes
from actlab.data import tasks as tasks_lib
from actlab.engine import axes, plasticity
from actlab.engine.optim import make_optimizer
from actlab.engine.resolve import resolve
from actlab.engine.state import TrainState
from actlab.measure import heads
from actlab.measure.heads import Head
from actlab.models import initializers
from actlab.models.base import PyTree

Member = dict[str, Any]  # a member's seed and its values of the vmapped hyperparameters


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What a configuration trains: data, model, head, optimizer, layer activations."""

    config: Config
    dataset: data.Dataset
    model: models.Model
    head: Head
    tx: optax.GradientTransformation
    specs: tuple[activations.Spec, ...]  # as configured (vmapped parameters at their base value)
    tasks: tasks_lib.Tasks  # the task sequence (one fixed task by default)
    plastic: plasticity.Intervention  # plasticity.method (none by default)

    @property
    def axes(self) -> tuple[config_axes.Axis, ...]:
        return self.config.train.vmap

    @property
    def members(self) -> list[Member]:
        """Every member: its values of the vmapped hyperparameters (grid) x seeds."""
        t = self.config.train
        grid = itertools.product(*(a.values for a in self.axes))
        return [{**{a.key: v for a, v in zip(self.axes, point, strict=True)}, "seed": t.seed + i}
                for point in grid for i in range(t.seeds)]

    def member_specs(self, member: Member) -> tuple[activations.Spec, ...]:
        """The layer activations of one member, its vmapped activation parameters filled in."""
        specs = self.specs
        for a in self.axes:
            specs = tuple(axes.spec(a, sp, member[a.key]) for sp in specs)
        return specs

    def consts(self, members: list[Member]) -> dict[str, np.ndarray]:
        """Per-member metric constants [M, L]: saturation bounds, max |phi'|, can_die."""
        rows = [layer_consts(self.member_specs(m)) for m in members]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def layer_consts(specs: tuple[activations.Spec, ...]) -> dict[str, np.ndarray]:
    """The metric constants of one member's layers [L]: saturation bounds (NaN: none),
    max |phi'|, can_die."""
    bounds = [sp.saturation() or (np.nan, np.nan) for sp in specs]
    cols = ([b[0] for b in bounds], [b[1] for b in bounds], [_dphi_max(sp) for sp in specs],
            [sp.info.can_die for sp in specs])
    return dict(zip(("sat_lo", "sat_hi", "dphi_max", "can_die"),
                    (np.asarray(c, np.float32) for c in cols), strict=True))


_DPHI_MAX_CACHE: dict[tuple, float] = {}


def _dphi_max(sp: activations.Spec) -> float:
    key = (sp.name, tuple(sorted(sp.fixed.items())), tuple(sorted(sp.learned.items())))
    if key not in _DPHI_MAX_CACHE:
        _DPHI_MAX_CACHE[key] = sp.max_abs_derivative()
    return _DPHI_MAX_CACHE[key]


def layer_specs(config: Config) -> tuple[activations.Spec, ...]:
    """One activation Spec per activation site of the model."""
    m = config.model
    if m.activations is not None:
        return tuple(activations.spec(a) for a in m.activations)
    sp = activations.spec(config.activation.name, **config.activation.params)
    return (sp,) * m.num_layers


def resolved_init(config: Config, specs: tuple[activations.Spec, ...]) -> initializers.Scheme:
    """The model's init.Scheme, with 'auto' and 'critical' resolved.

    'auto' becomes the first layer's recommended scheme; 'critical' gets the edge-of-chaos
    sigma_w2 of each layer (critical_sigma_w2).
    """
    c = config.init
    name = activations.recommended_init(specs[0].name) if c.name == "auto" else c.name
    sigma_w2 = critical_sigma_w2(specs, c.sigma_b2) if name == "critical" else c.sigma_w2
    return initializers.Scheme(name, c.distribution, c.gain, sigma_w2, c.sigma_b2)


_CRITICAL_CACHE: dict[tuple, float] = {}


def critical_sigma_w2(specs: tuple[activations.Spec, ...],
                      sigma_b2: float) -> float | tuple[float, ...]:
    """The edge-of-chaos sigma_w2 (chi1 = 1) per layer: one value when all layers agree.

    Layer l's weights act on phi_{l-1}(z_{l-1}), so theirs is phi_{l-1}'s critical value
    (layer 0 takes phi_0's). One-line ModelError where no critical point exists.
    """
    out = []
    for sp in (specs[0], *specs[:-1]):
        key = (sp.name, tuple(sorted(sp.fixed.items())), tuple(sorted(sp.learned.items())),
               float(sigma_b2))
        if key not in _CRITICAL_CACHE:
            try:
                _CRITICAL_CACHE[key] = theory.critical_sigma_w2(sp, sigma_b2)
            except theory.TheoryError as e:
                raise models.ModelError(f"init=critical: {e}") from None
        out.append(_CRITICAL_CACHE[key])
    return out[0] if len(set(out)) == 1 else tuple(out)


def build(config: Config, dataset: data.Dataset | None = None) -> Experiment:
    """Load the dataset and build model, head and optimizer for `config`.

    A vmapped activation parameter becomes a model parameter (learned-style, so each
    member holds its own value) that the optimizer never updates.
    """
    config = resolve(config)
    ds = dataset or data.load(config.dataset.name, **config.dataset.params)
    specs = layer_specs(config)
    frozen = tuple(a.param for a in config.train.vmap if isinstance(a, config_axes.ActivationParam))
    model_specs = tuple(dataclasses.replace(
        sp, fixed={k: v for k, v in sp.fixed.items() if k not in frozen},
        learned={**sp.learned, **{p: float(sp.fixed[p]) for p in frozen if p in sp.fixed}})
        for sp in specs)
    extra = {k: ds.meta[k] for k in ("num_users", "num_items") if k in ds.meta}
    if ds.task == "rating" and config.model.name != "recommender":
        raise models.ModelError(f"dataset '{ds.name}' holds (user, item) ratings; use "
                                f"model=recommender")
    if config.init.name == "critical" and frozen:
        raise models.ModelError(f"init=critical with train.vmap.activation.{frozen[0]}: the "
                                f"critical sigma_w2 differs per member; sweep it with -m")
    init = resolved_init(config, specs) if specs else ("he", "normal", 1.0)
    model = models.build(config.model.name, specs=model_specs, num_classes=ds.num_classes,
                         input_shape=ds.input_shape, init=init, **config.model.params, **extra)
    if not specs:  # model=custom: its layers and their sites are found when it is built
        specs = model.specs
    model = dataclasses.replace(model, precision=config.train.matmul_precision)
    if config.train.dtype != "float32":
        model = dataclasses.replace(model, dtype=jnp.dtype(config.train.dtype))

    def is_frozen(params: PyTree) -> PyTree:
        return model.mask(params, lambda r: r.group == "act" and r.param in frozen)

    tx = make_optimizer(config.optimizer, config.train.steps,
                        injectable_lr=any(isinstance(a, config_axes.LearningRate)
                                          for a in config.train.vmap),
                        frozen=is_frozen if frozen else None, lr_factors=lr_factors(model, config))
    if config.plasticity.method != "none" and config.model.name not in plasticity.UNIT_MODELS:
        raise models.ModelError(f"plasticity.method={config.plasticity.method} replaces hidden "
                                f"units of a dense network; it needs model="
                                f"{' or model='.join(plasticity.UNIT_MODELS)}")
    return Experiment(config=config, dataset=ds, model=model,
                      head=heads.of_config(config, ds),
                      tx=tx, specs=specs, tasks=tasks_lib.make(config.task, ds),
                      plastic=plasticity.of(config.plasticity, model,
                                            np.asarray(ds.x_train[:1]), config.task.length,
                                            config.train.steps))


def lr_factors(model: models.Model, config: Config
               ) -> tuple[dict[str, float], Callable[[PyTree], PyTree]] | None:
    """The width parametrization's factor on each parameter's update (None under sp): the
    factor of each kind of parameter, and params -> the tree of their kinds."""
    if model.lr_factor is None:
        return None
    factors, kind = model.lr_factor(config.optimizer.name)

    def labels(params: PyTree) -> PyTree:
        return jax.tree.map(kind, model.labels(params),
                            is_leaf=lambda r: isinstance(r, models.Role))

    return dict(factors), labels


def device_data(exp: Experiment) -> dict[str, jax.Array]:
    """The dataset and the fixed probe batch, resident on the device."""
    ds, p = exp.dataset, exp.config.train.probe_size
    arrays = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test,
              "y_test": ds.y_test, "x_fixed": ds.x_train[:p], "y_fixed": ds.y_train[:p],
              **exp.tasks.arrays(ds)}
    return jax.device_put(arrays)


def initial_state(exp: Experiment, members: list[Member] | None = None) -> TrainState:
    """Initial state for each member, stacked on a leading member axis.

    Each member initialises from its seed; then each vmapped axis applies its value
    (see actlab.engine.axes).
    """
    members = exp.members if members is None else members
    x0 = jnp.asarray(exp.dataset.x_train[:1])

    def one(seed: jax.Array, hp: dict[str, jax.Array],
            consts: dict[str, jax.Array]) -> TrainState:
        init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
        params, model_state = exp.model.init(init_key, x0)
        for a in exp.axes:
            params = axes.init_params(a, params, hp[a.key], exp.model)
        opt_state = exp.tx.init(params)
        for a in exp.axes:
            opt_state = axes.init_opt_state(a, opt_state, hp[a.key])
        zeros = jnp.zeros((exp.model.num_layers,), jnp.float32)
        extra = {"ref": {"mean": zeros, "std": zeros}, "plastic": exp.plastic.init(params)}
        return TrainState(params=params, opt_state=opt_state, model_state=model_state,
                          step=jnp.zeros((), jnp.int32),
                          diverged_at=jnp.full((), -1, jnp.int32), key=data_key, consts=consts,
                          extra=extra)

    hp = {a.key: jnp.asarray([m[a.key] for m in members], jnp.float32) for a in exp.axes}
    seeds = jnp.asarray([m["seed"] for m in members], jnp.uint32)
    return jax.jit(jax.vmap(one))(seeds, hp, exp.consts(members))
