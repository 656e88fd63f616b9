"""The optax transformation named by the configuration: optimizer, schedule, clipping, masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from actlab.config import OptimizerConfig


def lr_factor(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Multiplier of the learning rate: 1, or warmup_cosine's linear warmup then cosine to 0.

    The warmup reaches (t + 1) / warmup_steps at step t, so the last warmup step
    runs at the full rate; the cosine then decays over the remaining steps.
    """
    w, total = cfg.warmup_steps, max(total_steps, 1)
    cosine = optax.cosine_decay_schedule(1.0, max(total - w, 1))
    if w == 0:
        return cosine
    warmup = optax.linear_schedule(1.0 / w, 1.0, max(w - 1, 1))
    return optax.join_schedules([warmup, cosine], [w])


def _base(cfg: OptimizerConfig,
          learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    if cfg.name == "sgd":
        tx = optax.sgd(learning_rate)
    elif cfg.name == "momentum":
        tx = optax.sgd(learning_rate, momentum=cfg.momentum)
    elif cfg.name == "adam":
        tx = optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    else:
        return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay)
    if cfg.weight_decay:
        tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay), tx)
    return tx


def make_optimizer(cfg: OptimizerConfig, total_steps: int = 1, injectable_lr: bool = False,
                   frozen: Callable[[Any], Any] | None = None,
                   lr_factors: tuple[dict[str, float], Callable[[Any], Any]] | None = None
                   ) -> optax.GradientTransformation:
    """Clipping, the optimizer, the schedule; parameters where `frozen(params)` is True
    get no gradient and no update.

    With `injectable_lr` the learning rate lives in the optimizer state
    (optax.inject_hyperparams), so members of one program can use different rates;
    the schedule is a multiplier, so it composes with any rate. `lr_factors` = (factor per
    label, params -> tree of labels): each parameter's update is multiplied by its label's
    factor (a width parametrization's per-layer learning rates, optax.multi_transform).
    """

    def make(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
        parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
        parts.append(_base(cfg, learning_rate))
        if cfg.schedule == "warmup_cosine":
            parts.append(optax.scale_by_schedule(lr_factor(cfg, total_steps)))
        if lr_factors is not None:
            factors, labels = lr_factors
            parts.append(optax.multi_transform({k: optax.scale(f) for k, f in factors.items()},
                                               labels))
        if frozen is not None:
            freeze = optax.masked(optax.set_to_zero(), frozen)
            parts = [freeze, *parts, freeze]
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    if injectable_lr:
        return optax.inject_hyperparams(make)(learning_rate=cfg.lr)
    return make(cfg.lr)
