"""Typed, validated configuration: plain dataclasses, no Hydra.

Every field declares its default, type and range once, in the dataclass (field
metadata); one generic validator (`_section`) reads a mapping against them, so
`Config.from_dict` either returns a Config or raises ConfigError with a one-line
message naming the key, the bad value and what is accepted. The activation,
model and dataset sections are checked by their registries (their defaults are
the builders' signatures). `Config.to_dict` is the resolved configuration that
summary.json stores: every default filled in.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from actlab import activations, axes, data, init, models
from actlab.metrics import FAMILIES as METRICS


class ConfigError(ValueError):
    """A user error in the configuration (one line, no traceback needed)."""


def field(default: Any = dataclasses.MISSING, *, lo: float | None = None,
          hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
          choices: tuple | Callable[[], Any] | None = None,
          parse: Callable[[str, Any], Any] | None = None,
          factory: Callable[[], Any] | None = None) -> Any:
    """A config field: its default and the rule its values obey (range, choices, parser)."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices,
            "parse": parse}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------- #
# Value rules

def _int(key: str, v: Any, lo: float | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise ConfigError(f"{key} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{key} must be >= {lo:g}, got {v}")
    return v


def _float(key: str, v: Any, lo: float | None = None, lo_open: bool = False,
           hi: float | None = None, hi_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{key} must be a number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ConfigError(f"{key} must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ConfigError(f"{key} must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
    return v


def _choice(key: str, v: Any, options) -> Any:
    options = list(options)
    if v not in options:
        raise ConfigError(f"unknown {key} '{v}'; choose from: {', '.join(map(str, options))}")
    return v


def _bool(key: str, v: Any) -> bool:
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def _no_extra(sec: str, given: Mapping[str, Any], known) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ConfigError(f"{sec} has no key {', '.join(extra)}; known: {', '.join(sorted(known))}")


def _mapping(d: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = d.get(name) or {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"'{name}' must be a mapping, got {v!r}")
    return dict(v)


def _value(key: str, f: dataclasses.Field, v: Any) -> Any:
    """Validate one value against its field's declared type and rule."""
    meta = f.metadata
    if meta.get("parse"):
        return meta["parse"](key, v)
    choices = meta.get("choices")
    if choices is not None:
        return _choice(key, v, choices() if callable(choices) else choices)
    if f.type in ("int", int):
        return _int(key, v, meta.get("lo"))
    if f.type in ("float", float):
        return _float(key, v, meta.get("lo"), meta.get("lo_open"), meta.get("hi"),
                      meta.get("hi_open"))
    if f.type in ("bool", bool):
        return _bool(key, v)
    return v


def _section(cls, name: str, given: Mapping[str, Any], **resolved: Any):
    """An instance of dataclass `cls` from `given`: unknown keys refused, every field
    validated by its rule, defaults from the class; `resolved` fields are set as given."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in resolved}
    _no_extra(name, {k: v for k, v in given.items() if k not in resolved}, fields)
    values = {k: _value(f"{name}.{k}", f, given[k]) for k, f in fields.items() if k in given}
    return cls(**values, **resolved)


# --------------------------------------------------------------------------- #
# Parsers of the fields that need more than a range

TARGET_KEYS = ("train/loss", "train/acc", "eval/loss", "eval/acc")
_TARGET_RE = re.compile(r"^\s*([a-z]+/[a-z]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


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


def parse_target(s: str | None, key: str = "train.target") -> Target | None:
    """Parse 'eval/acc>=0.95' into a Target; None or '' means no target."""
    if s is None or str(s).strip() in ("", "none", "null"):
        return None
    m = _TARGET_RE.match(str(s))
    if not m or m.group(1) not in TARGET_KEYS:
        raise ConfigError(
            f"{key} '{s}' is not of the form KEY>=VALUE with KEY one of "
            f"{', '.join(TARGET_KEYS)} (e.g. eval/acc>=0.95)")
    return Target(m.group(1), m.group(2), float(m.group(3)))


def _metrics(key: str, v: Any) -> tuple[str, ...]:
    if v in ("all", None):
        return METRICS
    if v in ("none", ""):
        return ()
    if isinstance(v, str):
        v = [v]
    for m in v:
        _choice(key, m, METRICS)
    return tuple(m for m in METRICS if m in v)


def _resume(key: str, v: Any) -> bool | str:
    if v == "auto" or isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ConfigError(f"{key} must be true, false or auto, got {v!r}")


def _per_call(key: str, v: Any) -> int | str:
    return v if v == "auto" else _int(key, v, lo=1)


def _names(options: tuple[str, ...]) -> Callable[[str, Any], tuple[str, ...]]:
    def parse(key: str, v: Any) -> tuple[str, ...]:
        v = [v] if isinstance(v, str) else list(v)
        return tuple(dict.fromkeys(_choice(key, s, options) for s in v))
    return parse


WANDB_KEYS = ("project", "entity", "group", "tags", "mode")
WANDB_MODES = ("auto", "offline", "online", "disabled")


def _wandb(key: str, v: Any) -> dict[str, Any]:
    wb = dict(v or {})
    _no_extra(key, wb, WANDB_KEYS)
    _choice(f"{key}.mode", wb.get("mode", "auto"), WANDB_MODES)
    if isinstance(wb.get("tags"), str):
        wb["tags"] = [wb["tags"]]
    return wb


# --------------------------------------------------------------------------- #
# The sections

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")
OBJECTIVES = ("final_eval_acc", "best_eval_acc", "final_eval_loss", "final_train_loss",
              "steps_to_target", "time_to_target", "loss_auc")
HEADS = ("softmax", "one_vs_all")
PROBES = ("hessian", "noise_scale")
SINKS = ("local", "stdout", "wandb", "none")


@dataclasses.dataclass(frozen=True)
class ActivationConfig:
    name: str = "relu"
    params: Mapping[str, Any] = field(factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    params: Mapping[str, Any] = field(factory=dict)  # depth, width, ... (builder defaults)
    activations: tuple[str, ...] | None = None  # one per layer; overrides `activation`
    head: str = field("softmax", choices=HEADS)  # classification output head
    num_layers: int = 4  # activation sites, derived from the model's parameters

    @property
    def depth(self) -> int:
        return int(self.params.get("depth", self.num_layers))


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str = "spiral"
    params: Mapping[str, Any] = field(factory=dict)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = field("adam", choices=OPTIMIZERS)
    lr: float = field(0.01, lo=0.0, lo_open=True)
    momentum: float = field(0.9, lo=0.0, hi=1.0, hi_open=True)  # sgd momentum, `momentum`
    b1: float = field(0.9, lo=0.0, hi=1.0, hi_open=True)
    b2: float = field(0.999, lo=0.0, hi=1.0, hi_open=True)
    eps: float = field(1e-8, lo=0.0)
    weight_decay: float = field(0.0, lo=0.0)
    schedule: str = field("constant", choices=SCHEDULES)
    warmup_steps: int = field(0, lo=0)  # linear warmup length for warmup_cosine
    clip_norm: float = field(0.0, lo=0.0)  # clip gradients to this global norm; 0: off


@dataclasses.dataclass(frozen=True)
class InitConfig:
    name: str = field("he", choices=lambda: init.names())
    distribution: str = field("normal", choices=init.DISTRIBUTIONS)
    gain: float = field(1.0, lo=0.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = field(2000, lo=1)
    batch_size: int = field(64, lo=1)
    seed: int = field(0, lo=0)
    seeds: int = field(1, lo=1)
    log_every: int = field(50, lo=1)
    eval_every: int = field(250, lo=0)
    target: Target | None = field(None, parse=lambda key, v: parse_target(v, key))
    probe_size: int = field(512, lo=1)
    # hyperparameters trained together as extra members (grid x seeds); see actlab.axes
    vmap: tuple[axes.Axis, ...] = ()
    metrics: tuple[str, ...] = field(METRICS, parse=_metrics)  # computed at log steps
    checkpoint_every: int = field(0, lo=0)  # steps between checkpoints; 0: off
    checkpoint_keep: int = field(2, lo=1)  # newest checkpoints kept
    resume: bool | str = field("auto", parse=_resume)  # True | False | "auto"
    objective: str = field("final_eval_acc", choices=OBJECTIVES)  # returned to sweepers
    # how members share the program: vmap (batched), map (one after another), auto
    member_loop: str = field("auto", choices=("auto", "vmap", "map"))
    # log steps per program call: their metrics come back together (auto: ~100 steps a call)
    log_steps_per_call: int | str = field("auto", parse=_per_call)


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    every: int = field(0, lo=0)  # steps between measurements (on the next log step); 0: off
    iters: int = field(20, lo=1)  # power iterations (hessian)
    chunk: int = field(64, lo=1)  # examples per vectorised slice of per-example gradients


@dataclasses.dataclass(frozen=True)
class ProbesConfig:
    hessian: ProbeConfig = ProbeConfig()  # top Hessian eigenvalue of the probe-batch loss
    noise_scale: ProbeConfig = ProbeConfig()  # gradient-noise scale B_simple

    @property
    def active(self) -> dict[str, ProbeConfig]:
        return {k: getattr(self, k) for k in PROBES if getattr(self, k).every > 0}


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    sinks: tuple[str, ...] = field(("local",), parse=_names(SINKS))
    progress: bool = True
    # W&B: project, entity, group (default: the configuration's name), tags, mode
    wandb: Mapping[str, Any] = field(factory=dict, parse=_wandb)


SECTIONS = ("activation", "model", "dataset", "optimizer", "init", "train", "probes", "logger")


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

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Config:
        """Validate a resolved config mapping; raise ConfigError on the first problem."""
        extra = sorted(set(d) - {*SECTIONS, "experiment", "hydra"})
        if extra:
            raise ConfigError(f"unknown top-level key {', '.join(extra)}")
        init_cfg = _section(InitConfig, "init", _mapping(d, "init"))
        act = _mapping(d, "activation")
        model = _model(d)
        try:
            vmap = axes.parse(_mapping(d, "train").get("vmap"), act,
                              model.activations is not None, init_cfg.gain)
        except axes.AxisError as e:
            raise ConfigError(str(e)) from None
        probes = _mapping(d, "probes")
        _no_extra("probes", probes, PROBES)
        return Config(
            activation=_activation(act), model=model, dataset=_dataset(d),
            optimizer=_section(OptimizerConfig, "optimizer", _mapping(d, "optimizer")),
            init=init_cfg, train=_section(TrainConfig, "train", _mapping(d, "train"), vmap=vmap),
            probes=ProbesConfig(**{p: _section(ProbeConfig, f"probes.{p}", _mapping(probes, p))
                                   for p in PROBES}),
            logger=_section(LoggerConfig, "logger", _mapping(d, "logger")))

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, every default filled in (what summary.json stores)."""
        model = {"name": self.model.name, **models.params_of(self.model.name),
                 **self.model.params, "head": self.model.head}
        if self.model.activations is not None:
            model["activations"] = list(self.model.activations)
        vmap: dict[str, dict[str, list[float]]] = {}
        for a in self.train.vmap:
            group, key = a.key.split(".", 1)
            vmap.setdefault(group, {})[key] = list(a.values)
        train = {**_plain(self.train), "target": None if self.train.target is None
                 else str(self.train.target), "vmap": vmap}
        return {
            "activation": {"name": self.activation.name, **self.activation.params},
            "model": model,
            "dataset": {"name": self.dataset.name, **data.params_of(self.dataset.name),
                        **self.dataset.params},
            "optimizer": _plain(self.optimizer), "init": _plain(self.init), "train": train,
            "probes": {p: _plain(getattr(self.probes, p)) for p in PROBES},
            "logger": _plain(self.logger),
        }


def _plain(obj) -> dict[str, Any]:
    """A config section as plain JSON-able values (tuples as lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping)
                                                             else v)
    return out


def _activation(sec: dict[str, Any]) -> ActivationConfig:
    name = sec.pop("name", ActivationConfig.name)
    try:
        activations.spec(name, **sec)
    except activations.ActivationError as e:
        raise ConfigError(str(e)) from None
    return ActivationConfig(name=name, params=sec)


def _model(d: Mapping[str, Any]) -> ModelConfig:
    sec = _mapping(d, "model")
    name = _choice("model.name", sec.pop("name", ModelConfig.name), models.names())
    acts = sec.pop("activations", None)
    head = _choice("model.head", sec.pop("head", "softmax"), HEADS)
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
    sec = _mapping(d, "dataset")
    name = sec.pop("name", DatasetConfig.name)
    try:
        data.check(name, sec)
    except data.DataError as e:
        raise ConfigError(str(e)) from None
    return DatasetConfig(name=name, params=sec)
