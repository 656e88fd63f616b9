"""Typed, validated configuration: plain dataclasses, no Hydra.

Every field declares its default, type and range once, in the dataclass (field
metadata); one generic validator (actlab.config.validate.section) reads a mapping against them, so
`Config.from_dict` either returns a Config or raises ConfigError with a one-line
message naming the key, the bad value and what is accepted. The activation,
model, dataset and probe sections, and the sinks' names, are checked against
their registries when the config is resolved (actlab.engine.resolve.resolve, which also
fills in the builders' defaults): this package imports no jax, so it is the
bottom layer everything else may import. `Config.to_dict` of a resolved config
is what summary.json stores: every default filled in.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from actlab.config import axes
from actlab.config.tasks import PlasticityConfig, TaskConfig
from actlab.config.validate import (
    ConfigError,
    as_float,
    as_int,
    choice,
    field,
    mapping,
    no_extra,
    section,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# --------------------------------------------------------------------------- #
# Names of the choices whose implementations live above config (each implementation
# checks that it covers them)

# per-layer metric families (actlab.measure.metrics computes each)
METRICS = ("grad_norm", "weight_norm", "update_ratio", "delta_norm", "act_mean", "act_std",
           "dead_frac", "sat_frac", "q", "c", "dormant_frac", "erank", "srank", "weight_mag",
           "preact_drift", "ffn_sparsity", "outlier_kurtosis", "massive_ratio", "attn_entropy",
           "token_cosine")
INIT_SCHEMES = ("auto", "critical", "glorot", "he", "lecun", "orthogonal")  # models.initializers
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# --------------------------------------------------------------------------- #
# Parsers of the fields that need more than a range

# eval/bpb and eval/ppl (next-token sets: bits per token and perplexity) are lower-is-better
TARGET_KEYS = ("train/loss", "train/acc", "eval/loss", "eval/acc", "task_end/acc",
               "task_end/loss", "train/bpb", "eval/bpb", "train/ppl", "eval/ppl")
_TARGET_RE = re.compile(r"^\s*([a-z_]+/[a-z]+)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


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
        choice(key, m, METRICS)
    return tuple(m for m in METRICS if m in v)


def _resume(key: str, v: Any) -> bool | str:
    if v == "auto" or isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise ConfigError(f"{key} must be true, false or auto, got {v!r}")


def _per_call(key: str, v: Any) -> int | str:
    return v if v == "auto" else as_int(key, v, lo=1)


def _names(key: str, v: Any) -> tuple[str, ...]:
    """A list of names (one name is a list of one), duplicates dropped; checked on resolve."""
    v = [v] if isinstance(v, str) else list(v)
    if not all(isinstance(s, str) for s in v):
        raise ConfigError(f"{key} must be a list of names, got {v!r}")
    return tuple(dict.fromkeys(v))


WANDB_DEFAULTS: dict[str, Any] = {"project": "actlab", "entity": None, "group": None,
                                  "tags": [], "mode": "auto"}
WANDB_KEYS = tuple(WANDB_DEFAULTS)
WANDB_MODES = ("auto", "offline", "online", "disabled")


def _wandb(key: str, v: Any) -> dict[str, Any]:
    no_extra(key, dict(v or {}), WANDB_KEYS)
    wb = {**WANDB_DEFAULTS, **dict(v or {})}
    choice(f"{key}.mode", wb.get("mode", "auto"), WANDB_MODES)
    if isinstance(wb.get("tags"), str):
        wb["tags"] = [wb["tags"]]
    return wb


# --------------------------------------------------------------------------- #
# The sections

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")
OBJECTIVES = ("final_eval_acc", "best_eval_acc", "final_eval_loss", "final_train_loss",
              "task_acc_last10", "final_eval_bpb", "best_eval_bpb",
              "steps_to_target", "time_to_target", "loss_auc")
HEADS = ("softmax", "one_vs_all")
LOSSES = ("cross_entropy", "mse")


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
    # classification loss: the head's cross-entropy, or mse: (1/2) sum over classes of
    # (output - onehot)^2, mean over examples (Cohen et al. 2021's SquaredLoss)
    loss: str = field("cross_entropy", choices=LOSSES)
    num_layers: int = 4  # activation sites, derived from the model's parameters on resolve

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


def _sigma_w2(key: str, v: Any) -> float | None:
    return None if v in (None, "null", "none") else as_float(key, v, lo=0.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class InitConfig:
    name: str = field("he", choices=INIT_SCHEMES)
    distribution: str = field("normal", choices=DISTRIBUTIONS)
    gain: float = field(1.0, lo=0.0, lo_open=True)
    # hidden weights N(0, gain^2 sigma_w2 / fan_in) under any scheme; None: the scheme's own
    sigma_w2: float | None = field(None, parse=_sigma_w2)
    sigma_b2: float = field(0.0, lo=0.0)  # hidden biases N(0, sigma_b2); 0: zeros

    def __post_init__(self) -> None:
        if self.name == "critical" and self.sigma_w2 is not None:
            raise ConfigError(f"init.sigma_w2={self.sigma_w2:g} cannot be set with "
                              "init=critical, which derives it from the activation and "
                              "init.sigma_b2")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = field(2000, lo=1)
    batch_size: int = field(64, lo=1)
    seed: int = field(0, lo=0)
    seeds: int = field(1, lo=1)
    log_every: int = field(50, lo=1)
    eval_every: int = field(250, lo=0)
    target: Target | None = field(Target("eval/acc", ">=", 0.95),
                                  parse=lambda key, v: parse_target(v, key))
    probe_size: int = field(512, lo=1)
    # a unit is dormant when its mean |h| is at most this fraction of its layer's mean
    # (dormant_frac; Sokar et al. 2023); 0: exactly inactive units only
    dormant_tau: float = field(0.025, lo=0.0)
    # hyperparameters trained together as extra members (grid x seeds); see actlab.engine.axes
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
    # compute dtype of activations and matmuls; parameters, optimizer state and metric
    # reductions stay float32
    dtype: str = field("float32", choices=("float32", "bfloat16", "float16"))
    # precision of float32 matmuls and convolutions: highest (true float32, as the metrics'
    # float64 checks assume), high, or default (the backend's fastest: TF32 on NVIDIA GPUs
    # since Ampere, one bfloat16 pass on TPUs); CPUs compute float32 at every setting
    matmul_precision: str = field("highest", choices=("highest", "high", "default"))
    # how the program spreads over devices: auto (members, when their count divides the
    # devices), members, batch (each batch split over a members x data mesh), none
    shard: str = field("auto", choices=("auto", "members", "batch", "none"))


@dataclasses.dataclass(frozen=True)
class ProbesConfig:
    """The probes' settings, name -> settings (actlab.measure.probes): raw mappings as
    given until the config is resolved, then every registered probe's settings object."""

    settings: Mapping[str, Any] = field(factory=dict)

    def __getattr__(self, name: str) -> Any:
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(name)

    @property
    def active(self) -> dict[str, Any]:
        """The probes switched on (every > 0), by name."""
        return {k: v for k, v in self.settings.items() if _every(v) > 0}


def _every(v: Any) -> int:
    return int(v.get("every", 0) if isinstance(v, Mapping) else v.every)


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    sinks: tuple[str, ...] = field(("local",), parse=_names)  # actlab.sinks' names
    progress: bool = True
    # bins of the per-layer pre-activation histograms a tensorboard sink draws at log steps
    # (computed inside the program on the probe batch); 0: none
    histogram_bins: int = field(30, lo=0)
    # W&B: project, entity, group (default: the configuration's name), tags, mode
    wandb: Mapping[str, Any] = field(factory=lambda: dict(WANDB_DEFAULTS), parse=_wandb)


SECTIONS = ("activation", "model", "dataset", "optimizer", "init", "train", "probes", "logger",
            "task", "plasticity")


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
    task: TaskConfig = TaskConfig()
    plasticity: PlasticityConfig = PlasticityConfig()
    # checked against the registries and completed with their defaults (engine.resolve)
    resolved: bool = False

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Config:
        """Validate a resolved config mapping; raise ConfigError on the first problem."""
        extra = sorted(set(d) - {*SECTIONS, "experiment", "hydra"})
        if extra:
            raise ConfigError(f"unknown top-level key {', '.join(extra)}")
        init_cfg = section(InitConfig, "init", mapping(d, "init"))
        act = mapping(d, "activation")
        model = _model(d)
        try:
            vmap = axes.parse(mapping(d, "train").get("vmap"), model.activations is not None,
                              init_cfg.gain)
        except axes.AxisError as e:
            raise ConfigError(str(e)) from None
        probes = mapping(d, "probes")
        return Config(
            activation=_activation(act), model=model, dataset=_dataset(d),
            optimizer=section(OptimizerConfig, "optimizer", mapping(d, "optimizer")),
            init=init_cfg, train=section(TrainConfig, "train", mapping(d, "train"), vmap=vmap),
            probes=ProbesConfig({p: mapping(probes, p) for p in probes}),
            logger=section(LoggerConfig, "logger", mapping(d, "logger")),
            task=section(TaskConfig, "task", mapping(d, "task")),
            plasticity=section(PlasticityConfig, "plasticity", mapping(d, "plasticity")))

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration, every default filled in (what summary.json stores)."""
        if not self.resolved:
            raise ValueError("Config.to_dict needs a resolved config: actlab.engine.resolve"
                             ".resolve(config) fills in the registries' defaults")
        model = {"name": self.model.name, **self.model.params, "head": self.model.head,
                 "loss": self.model.loss,
                 "activations": None if self.model.activations is None
                 else list(self.model.activations)}
        vmap: dict[str, dict[str, list[float]]] = {}
        for a in self.train.vmap:
            group, key = a.key.split(".", 1)
            vmap.setdefault(group, {})[key] = list(a.values)
        train = {**_plain(self.train), "target": None if self.train.target is None
                 else str(self.train.target), "vmap": vmap}
        return {
            "activation": {"name": self.activation.name, **self.activation.params},
            "model": model,
            "dataset": {"name": self.dataset.name, **self.dataset.params},
            "optimizer": _plain(self.optimizer), "init": _plain(self.init), "train": train,
            "probes": {p: _plain(v) for p, v in self.probes.settings.items()},
            "logger": _plain(self.logger), "task": _plain(self.task),
            "plasticity": _plain(self.plasticity),
        }


def _plain(obj: DataclassInstance) -> dict[str, Any]:
    """A config section as plain JSON-able values (tuples as lists)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, Mapping)
                                                             else v)
    return out


def _activation(sec: dict[str, Any]) -> ActivationConfig:
    name = sec.pop("name", ActivationConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"activation.name must be a name, got {name!r}")
    return ActivationConfig(name=name, params=sec)


def _model(d: Mapping[str, Any]) -> ModelConfig:
    sec = mapping(d, "model")
    name = sec.pop("name", ModelConfig.name)
    acts = sec.pop("activations", None)
    head = choice("model.head", sec.pop("head", ModelConfig.head), HEADS)
    loss = choice("model.loss", sec.pop("loss", ModelConfig.loss), LOSSES)
    if loss == "mse" and head != "softmax":
        raise ConfigError(f"model.loss=mse fits the raw outputs to one-hot targets; use it "
                          f"with model.head=softmax, not {head}")
    for k, v in list(sec.items()):
        if isinstance(v, list):
            sec[k] = tuple(v)
    if acts is not None:
        if isinstance(acts, str) or not all(isinstance(a, str) for a in acts):
            raise ConfigError(f"model.activations must be a list of names, got {acts!r}")
        acts = tuple(acts)
    return ModelConfig(name=name, params=sec, activations=acts, head=head, loss=loss)


def _dataset(d: Mapping[str, Any]) -> DatasetConfig:
    sec = mapping(d, "dataset")
    return DatasetConfig(name=sec.pop("name", DatasetConfig.name), params=sec)
