"""Typed, validated configuration: plain dataclasses, no Hydra.

`Config.from_dict` takes the resolved mapping (from Hydra, a notebook or a test)
and either returns a Config or raises ConfigError with a one-line message that
names the key, the bad value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from actlab import activations, data, init, models


class ConfigError(ValueError):
    """A user error in the configuration (one line, no traceback needed)."""


TARGET_KEYS = ("train/loss", "train/acc", "eval/loss", "eval/acc")
_TARGET_RE = re.compile(r"^\s*([a-z]+/[a-z]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
OBJECTIVES = ("final_eval_acc", "best_eval_acc", "final_eval_loss", "final_train_loss",
              "steps_to_target", "time_to_target", "loss_auc")
METRICS = ("grad_norm", "weight_norm", "update_ratio", "delta_norm", "act_mean", "act_std",
           "dead_frac", "sat_frac")


@dataclasses.dataclass(frozen=True)
class Target:
    """A convergence target such as eval/acc>=0.95."""

    key: str
    op: str
    value: float

    def met(self, x: float) -> bool:
        return {">=": x >= self.value, "<=": x <= self.value,
                ">": x > self.value, "<": x < self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"


@dataclasses.dataclass(frozen=True)
class ActivationConfig:
    name: str = "relu"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # depth, width, ...
    activations: tuple[str, ...] | None = None  # one per layer; overrides `activation`
    head: str = "softmax"  # softmax | one_vs_all (classification)
    num_layers: int = 4  # activation sites, derived from the model's parameters

    @property
    def depth(self) -> int:
        return int(self.params.get("depth", self.num_layers))


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str = "spiral"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    lr: float = 0.01
    momentum: float = 0.9  # for sgd with momentum > 0 and `momentum`
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | warmup_cosine
    warmup_steps: int = 0  # linear warmup length for warmup_cosine
    clip_norm: float = 0.0  # clip gradients to this global norm; 0: off


@dataclasses.dataclass(frozen=True)
class InitConfig:
    name: str = "he"
    distribution: str = "normal"
    gain: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    seeds: int = 1
    log_every: int = 50
    eval_every: int = 250
    target: Target | None = None
    probe_size: int = 512
    # hyperparameters trained together as extra vmapped members: key -> values
    vmap: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    metrics: tuple[str, ...] = METRICS  # per-layer metrics computed at log steps
    checkpoint_every: int = 0  # steps between checkpoints (on the next log step); 0: off
    checkpoint_keep: int = 2  # newest checkpoints kept
    resume: bool | str = "auto"  # True | False | "auto" (resume when the run dir has a checkpoint)
    objective: str = "final_eval_acc"  # what the CLI returns to a sweeper (mean over members)
    # how members share the program: vmap (batched), map (one after another), auto
    member_loop: str = "auto"


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    every: int = 0  # steps between measurements (on the next log step); 0: off
    iters: int = 20  # power iterations (hessian)
    chunk: int = 64  # examples per vectorised slice of per-example gradients (noise_scale)


@dataclasses.dataclass(frozen=True)
class ProbesConfig:
    hessian: ProbeConfig = ProbeConfig()  # top Hessian eigenvalue of the probe-batch loss
    noise_scale: ProbeConfig = ProbeConfig()  # gradient-noise scale B_simple

    @property
    def active(self) -> dict[str, ProbeConfig]:
        return {k: v for k, v in (("hessian", self.hessian), ("noise_scale", self.noise_scale))
                if v.every > 0}


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    sinks: tuple[str, ...] = ("local",)
    progress: bool = True
    # W&B: project, entity, group (default: the configuration's name), tags, mode
    wandb: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Config:
    activation: ActivationConfig = ActivationConfig()
    model: ModelConfig = ModelConfig()
    dataset: DatasetConfig = DatasetConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    init: InitConfig = InitConfig()
    train: TrainConfig = TrainConfig()
    probes: ProbesConfig = ProbesConfig()
    logger: LoggerConfig = LoggerConfig()
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Config:
        """Validate a resolved config mapping; raise ConfigError on the first problem."""
        return _build(d)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as given (for summary.json)."""
        return dict(self.raw)


# --------------------------------------------------------------------------- #

def _section(d: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = d.get(name) or {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"'{name}' must be a mapping, got {v!r}")
    return dict(v)


def _int(sec: str, key: str, v: Any, lo: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise ConfigError(f"{sec}.{key} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{sec}.{key} must be >= {lo}, got {v}")
    return v


def _float(sec: str, key: str, v: Any, lo: float | None = None, lo_open: bool = False,
           hi: float | None = None, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{sec}.{key} must be a number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(f"{sec}.{key} must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(f"{sec}.{key} must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
    return v


def _choice(sec: str, key: str, v: Any, options) -> str:
    options = list(options)
    if v not in options:
        raise ConfigError(f"unknown {sec}.{key} '{v}'; choose from: {', '.join(options)}")
    return v


def _no_extra(sec: str, given: Mapping[str, Any], known) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ConfigError(f"{sec} has no key {', '.join(extra)}; known: {', '.join(sorted(known))}")


def parse_target(s: str | None) -> Target | None:
    """Parse 'eval/acc>=0.95' into a Target; None or '' means no target."""
    if s is None or str(s).strip() in ("", "none", "null"):
        return None
    m = _TARGET_RE.match(str(s))
    if not m or m.group(1) not in TARGET_KEYS:
        raise ConfigError(
            f"train.target '{s}' is not of the form KEY>=VALUE with KEY one of "
            f"{', '.join(TARGET_KEYS)} (e.g. eval/acc>=0.95)"
        )
    return Target(m.group(1), m.group(2), float(m.group(3)))


def _activation(d: Mapping[str, Any]) -> ActivationConfig:
    sec = _section(d, "activation")
    name = sec.pop("name", "relu")
    try:
        activations.spec(name, **sec)
    except activations.ActivationError as e:
        raise ConfigError(str(e)) from None
    return ActivationConfig(name=name, params=sec)


HEADS = ("softmax", "one_vs_all")


def _model(d: Mapping[str, Any]) -> ModelConfig:
    sec = _section(d, "model")
    name = _choice("model", "name", sec.pop("name", "mlp"), models.names())
    acts = sec.pop("activations", None)
    head = _choice("model", "head", sec.pop("head", "softmax"), HEADS)
    for k, v in list(sec.items()):
        if isinstance(v, list):
            sec[k] = tuple(v)
    try:
        n = models.check(name, sec)
    except models.ModelError as e:
        raise ConfigError(str(e)) from None
    if acts is not None:
        if isinstance(acts, str) or not all(isinstance(a, str) for a in acts):
            raise ConfigError(f"model.activations must be a list of names, got {acts!r}")
        if len(acts) != n:
            raise ConfigError(f"model.activations has {len(acts)} entries but model '{name}' "
                              f"has {n} activation layers")
        for a in acts:
            try:
                activations.spec(a)
            except activations.ActivationError as e:
                raise ConfigError(f"model.activations: {e}") from None
        acts = tuple(acts)
    return ModelConfig(name=name, params=sec, activations=acts, head=head, num_layers=n)


def _dataset(d: Mapping[str, Any]) -> DatasetConfig:
    sec = _section(d, "dataset")
    name = sec.pop("name", "spiral")
    try:
        data.check(name, sec)
    except data.DataError as e:
        raise ConfigError(str(e)) from None
    return DatasetConfig(name=name, params=sec)


def _optimizer(d: Mapping[str, Any]) -> OptimizerConfig:
    sec = _section(d, "optimizer")
    _no_extra("optimizer", sec, [f.name for f in dataclasses.fields(OptimizerConfig)])
    o = OptimizerConfig()
    return OptimizerConfig(
        name=_choice("optimizer", "name", sec.get("name", o.name), OPTIMIZERS),
        lr=_float("optimizer", "lr", sec.get("lr", o.lr), lo=0.0, lo_open=True),
        momentum=_float("optimizer", "momentum", sec.get("momentum", o.momentum), 0.0, hi=1.0,
                        hi_open=True),
        b1=_float("optimizer", "b1", sec.get("b1", o.b1), 0.0, hi=1.0, hi_open=True),
        b2=_float("optimizer", "b2", sec.get("b2", o.b2), 0.0, hi=1.0, hi_open=True),
        eps=_float("optimizer", "eps", sec.get("eps", o.eps), 0.0),
        weight_decay=_float("optimizer", "weight_decay",
                            sec.get("weight_decay", o.weight_decay), 0.0),
        schedule=_choice("optimizer", "schedule", sec.get("schedule", o.schedule),
                         SCHEDULES),
        warmup_steps=_int("optimizer", "warmup_steps", sec.get("warmup_steps", 0), lo=0),
        clip_norm=_float("optimizer", "clip_norm", sec.get("clip_norm", 0.0), 0.0),
    )


SCHEDULES = ("constant", "warmup_cosine")


def _init(d: Mapping[str, Any]) -> InitConfig:
    sec = _section(d, "init")
    _no_extra("init", sec, [f.name for f in dataclasses.fields(InitConfig)])
    return InitConfig(
        name=_choice("init", "name", sec.get("name", "he"), init.names()),
        distribution=_choice("init", "distribution", sec.get("distribution", "normal"),
                             init.DISTRIBUTIONS),
        gain=_float("init", "gain", sec.get("gain", 1.0), 0.0, lo_open=True),
    )


def _train(d: Mapping[str, Any]) -> TrainConfig:
    sec = _section(d, "train")
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    _no_extra("train", sec, known)
    t = TrainConfig()
    steps = _int("train", "steps", sec.get("steps", t.steps), lo=1)
    log_every = _int("train", "log_every", sec.get("log_every", t.log_every), lo=1)
    eval_every = _int("train", "eval_every", sec.get("eval_every", t.eval_every), lo=0)
    return TrainConfig(
        steps=steps,
        batch_size=_int("train", "batch_size", sec.get("batch_size", t.batch_size), lo=1),
        seed=_int("train", "seed", sec.get("seed", t.seed), lo=0),
        seeds=_int("train", "seeds", sec.get("seeds", t.seeds), lo=1),
        log_every=log_every,
        eval_every=eval_every,
        target=parse_target(sec.get("target")),
        probe_size=_int("train", "probe_size", sec.get("probe_size", t.probe_size), lo=1),
        vmap=_vmap(sec.get("vmap"), _section(d, "activation"), _section(d, "model")),
        metrics=_metrics(sec.get("metrics", "all")),
        checkpoint_every=_int("train", "checkpoint_every", sec.get("checkpoint_every", 0), lo=0),
        checkpoint_keep=_int("train", "checkpoint_keep", sec.get("checkpoint_keep", 2), lo=1),
        resume=_resume(sec.get("resume", "auto")),
        objective=_choice("train", "objective", sec.get("objective", "final_eval_acc"),
                          OBJECTIVES),
        member_loop=_choice("train", "member_loop", sec.get("member_loop", "auto"),
                            ("auto", "vmap", "map")),
    )


def _resume(v: Any) -> bool | str:
    if isinstance(v, bool) or v == "auto":
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ConfigError(f"train.resume must be true, false or auto, got {v!r}")


def _metrics(v: Any) -> tuple[str, ...]:
    if v in ("all", None):
        return METRICS
    if v in ("none", ""):
        return ()
    if isinstance(v, str):
        v = [v]
    for m in v:
        _choice("train", "metrics", m, METRICS)
    return tuple(m for m in METRICS if m in v)


VMAP_KEYS = ("optimizer.lr", "init.gain", "activation.<numeric parameter>")


def _vmap(sec: Any, act: Mapping[str, Any],
          model: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """Flatten train.vmap ({optimizer: {lr: [...]}}) into {'optimizer.lr': (...)}.

    Besides optimizer.lr and init.gain, any numeric parameter of the activation
    can be vmapped (train.vmap.activation.alpha=[0.01,0.1,0.3] for leaky_relu).
    """
    out: dict[str, tuple[float, ...]] = {}
    act_name = act.get("name", "relu")
    act_params = {k: v for k, v in activations.info(act_name).params.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for group, inner in (sec or {}).items():
        for key, values in (inner or {}).items():
            name = f"{group}.{key}"
            if values is None:
                continue
            if isinstance(values, (int, float)):
                values = [values]
            if group == "activation":
                if key not in act_params:
                    raise ConfigError(
                        f"train.vmap.{name}: activation '{act_name}' has no numeric parameter "
                        f"'{key}'; it has: {', '.join(act_params) or 'none'}")
                if model.get("activations") is not None:
                    raise ConfigError(f"train.vmap.{name} needs one activation for all layers, "
                                      f"not model.activations")
                vals = tuple(_float("train.vmap", name, v) for v in values)
                base = {k: v for k, v in act.items() if k != "name"}
                for v in vals:
                    try:
                        activations.spec(act_name, **{**base, key: v})
                    except activations.ActivationError as e:
                        raise ConfigError(f"train.vmap.{name}: {e}") from None
            elif name in VMAP_KEYS:
                vals = tuple(_float("train.vmap", name, v, 0.0, lo_open=True) for v in values)
            else:
                raise ConfigError(f"train.vmap.{name} cannot be vmapped; choose from: "
                                  f"{', '.join(VMAP_KEYS)}")
            if not vals:
                raise ConfigError(f"train.vmap.{name} is an empty list")
            out[name] = vals
    return out


PROBES = ("hessian", "noise_scale")


def _probes(d: Mapping[str, Any]) -> ProbesConfig:
    sec = _section(d, "probes")
    _no_extra("probes", sec, PROBES)
    out = {}
    for name in PROBES:
        p = dict(sec.get(name) or {})
        _no_extra(f"probes.{name}", p, [f.name for f in dataclasses.fields(ProbeConfig)])
        out[name] = ProbeConfig(
            every=_int(f"probes.{name}", "every", p.get("every", 0), lo=0),
            iters=_int(f"probes.{name}", "iters", p.get("iters", 20), lo=1),
            chunk=_int(f"probes.{name}", "chunk", p.get("chunk", 64), lo=1))
    return ProbesConfig(**out)


SINKS = ("local", "stdout", "wandb", "none")
WANDB_KEYS = ("project", "entity", "group", "tags", "mode")
WANDB_MODES = ("auto", "offline", "online", "disabled")


def _logger(d: Mapping[str, Any]) -> LoggerConfig:
    sec = _section(d, "logger")
    _no_extra("logger", sec, ["sinks", "progress", "wandb"])
    sinks = sec.get("sinks", ["local"])
    if isinstance(sinks, str):
        sinks = [sinks]
    for s in sinks:
        _choice("logger", "sinks", s, SINKS)
    wb = dict(sec.get("wandb") or {})
    _no_extra("logger.wandb", wb, WANDB_KEYS)
    _choice("logger.wandb", "mode", wb.get("mode", "auto"), WANDB_MODES)
    if isinstance(wb.get("tags"), str):
        wb["tags"] = [wb["tags"]]
    return LoggerConfig(sinks=tuple(dict.fromkeys(sinks)), progress=bool(sec.get("progress", True)),
                        wandb=wb)


def _build(d: Mapping[str, Any]) -> Config:
    extra = sorted(set(d) - {"activation", "model", "dataset", "optimizer", "init", "train",
                             "probes", "logger", "experiment", "hydra"})
    if extra:
        raise ConfigError(f"unknown top-level key {', '.join(extra)}")
    return Config(
        activation=_activation(d), model=_model(d), dataset=_dataset(d),
        optimizer=_optimizer(d), init=_init(d), train=_train(d), probes=_probes(d),
        logger=_logger(d),
        raw={k: v for k, v in d.items() if k != "hydra"},
    )
