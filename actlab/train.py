"""The training engine: one jitted program per configuration.

`chunk(state, data, n_plain, apply, do_eval)` does one instrumented step (all
metrics, on the parameters theta_t it starts from) followed by `n_plain`
plain steps, for every member at once (vmap over the leading member axis).
The trip count is a traced number, so the same compiled program serves every
log interval, the remainder and the final measurement.

A record labelled `step = t` describes theta_t: gradients, delta, update ratio
of the update theta_t -> theta_t+1 on that step's batch; train/* on the fixed
probe batch of training examples; eval/* on the test split.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from actlab import activations, data, files, metrics, models, probes, writers
from actlab.config import Config, OptimizerConfig, Target


def enable_compilation_cache(path: str | None = None) -> None:
    """Turn on JAX's persistent compilation cache (default ~/.cache/actlab/jax)."""
    path = path or os.environ.get("ACTLAB_JAX_CACHE",
                                  str(Path.home() / ".cache" / "actlab" / "jax"))
    if path in ("", "0", "off"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; every leaf has a leading member axis."""

    params: Any
    opt_state: Any
    model_state: Any  # non-parameter collections, e.g. batch-norm running statistics
    step: jax.Array  # int32: updates applied so far
    diverged_at: jax.Array  # int32: step of the first non-finite loss, -1 if none
    key: jax.Array  # per-member key for batches; folded with the step
    # per-member metric constants, [L] each: saturation bounds (NaN: never saturates)
    # and max |phi'|; they depend on vmapped activation parameters
    consts: dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A configuration made concrete: data, model, optimizer, metric constants."""

    config: Config
    dataset: data.Dataset
    model: models.Model
    tx: optax.GradientTransformation
    specs: tuple[activations.Spec, ...]  # as configured (vmapped parameters at their base value)
    frozen: tuple[str, ...]  # vmapped activation parameters: per-member, held fixed in training

    @property
    def members(self) -> list[dict[str, Any]]:
        """Every member: its seed and its values of the vmapped hyperparameters (grid x seeds)."""
        t = self.config.train
        keys = list(t.vmap)
        grid = itertools.product(*(t.vmap[k] for k in keys)) if keys else [()]
        return [{**dict(zip(keys, point, strict=True)), "seed": t.seed + i}
                for point in grid for i in range(t.seeds)]

    def member_specs(self, member: dict[str, Any]) -> tuple[activations.Spec, ...]:
        """The layer activations of one member, its vmapped activation parameters filled in."""
        vals = {k.split(".", 1)[1]: v for k, v in member.items() if k.startswith("activation.")}
        if not vals:
            return self.specs
        return tuple(dataclasses.replace(sp, fixed={**sp.fixed, **vals}) for sp in self.specs)

    def consts(self, members: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Per-member metric constants [M, L]: saturation bounds and max |phi'|."""
        rows = []
        for m in members:
            specs = self.member_specs(m)
            bounds = [sp.saturation() or (np.nan, np.nan) for sp in specs]
            rows.append(([b[0] for b in bounds], [b[1] for b in bounds],
                         [_dphi_max(sp) for sp in specs]))
        lo, hi, dm = (np.asarray([r[i] for r in rows], np.float32) for i in range(3))
        return {"sat_lo": lo, "sat_hi": hi, "dphi_max": dm}


def lr_factor(cfg: OptimizerConfig, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """Multiplier of the learning rate at each step: 1, or linear warmup then cosine to 0."""
    w, total = cfg.warmup_steps, max(total_steps, 1)

    def factor(step):
        step = jnp.asarray(step, jnp.float32)
        warm = (step + 1) / max(w, 1)
        frac = jnp.clip((step - w) / max(total - w, 1), 0.0, 1.0)
        return jnp.where(step < w, warm, 0.5 * (1 + jnp.cos(jnp.pi * frac)))

    return factor


def make_optimizer(cfg: OptimizerConfig, injectable_lr: bool = False,
                   total_steps: int = 1, frozen: tuple[str, ...] = ()
                   ) -> optax.GradientTransformation:
    """The optax transformation named by the config (plus schedule and clipping).

    With `injectable_lr` the learning rate lives in the optimizer state
    (optax.inject_hyperparams), so members of one program can use different rates.
    Activation parameters named in `frozen` (act_<p>, act<l>_<p>) get no gradient
    and no update.
    """

    def is_frozen(params):
        def leaf(path, _):
            top = str(getattr(path[0], "key", path[0]))
            return top.startswith("act") and top.partition("_")[2] in frozen
        return jax.tree_util.tree_map_with_path(leaf, params)

    def make(learning_rate):
        parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
        parts.append(base(learning_rate))
        if cfg.schedule == "warmup_cosine":
            parts.append(optax.scale_by_schedule(lr_factor(cfg, total_steps)))
        if frozen:
            freeze = optax.masked(optax.set_to_zero(), is_frozen)
            parts = [freeze, *parts, freeze]
        return parts[0] if len(parts) == 1 else optax.chain(*parts)

    def base(learning_rate):
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

    if injectable_lr:
        return optax.inject_hyperparams(make)(learning_rate=cfg.lr)
    return make(cfg.lr)


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


def resolved_init(config: Config, specs: tuple[activations.Spec, ...]) -> str:
    """init.name, with 'auto' replaced by the first layer's recommended scheme."""
    if config.init.name != "auto":
        return config.init.name
    return activations.recommended_init(specs[0].name)


def build(config: Config, dataset: data.Dataset | None = None) -> Experiment:
    """Load the dataset and build model and optimizer for `config`.

    Vmapped activation parameters become model parameters (act_<p>), set per
    member at initialisation and frozen by the optimizer.
    """
    ds = dataset or data.load(config.dataset.name, **config.dataset.params)
    specs = layer_specs(config)
    frozen = tuple(k.split(".", 1)[1] for k in config.train.vmap if k.startswith("activation."))
    model_specs = tuple(dataclasses.replace(
        sp, fixed={k: v for k, v in sp.fixed.items() if k not in frozen},
        learned={**sp.learned, **{p: float(sp.fixed[p]) for p in frozen if p in sp.fixed}})
        for sp in specs)
    extra = {k: ds.meta[k] for k in ("num_users", "num_items") if k in ds.meta}
    if ds.task == "rating" and config.model.name != "recommender":
        raise models.ModelError(f"dataset '{ds.name}' holds (user, item) ratings; use "
                                f"model=recommender")
    model = models.build(config.model.name, specs=model_specs, num_classes=ds.num_classes,
                         input_shape=ds.input_shape,
                         init=(resolved_init(config, specs), config.init.distribution,
                               config.init.gain),
                         **config.model.params, **extra)
    return Experiment(
        config=config, dataset=ds, model=model,
        tx=make_optimizer(config.optimizer, "optimizer.lr" in config.train.vmap,
                          config.train.steps, frozen),
        specs=specs, frozen=frozen,
    )


def shard_members(state: TrainState, d: dict[str, jax.Array]
                  ) -> tuple[TrainState, dict[str, jax.Array], int]:
    """Spread the members over all local devices (leading axis), data replicated.

    Members are independent, so the partitioned program needs no communication
    and gives the numbers of a single device. Used when the member count is a
    multiple of the device count; otherwise everything stays on one device.
    Returns the placed state and data and the number of devices used.
    """
    devices = jax.local_devices()
    n = int(jax.tree.leaves(state)[0].shape[0])
    if len(devices) < 2 or n % len(devices):
        return state, d, 1
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("members",))
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec("members")))
    d = jax.device_put(d, NamedSharding(mesh, PartitionSpec()))
    return state, d, len(devices)


def device_data(exp: Experiment) -> dict[str, jax.Array]:
    """The dataset and the fixed probe batch, resident on the device."""
    ds, p = exp.dataset, exp.config.train.probe_size
    arrays = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test,
              "y_test": ds.y_test, "x_probe": ds.x_train[:p], "y_probe": ds.y_train[:p]}
    return jax.device_put(arrays)


def init_state(exp: Experiment, members: list[dict[str, Any]] | None = None) -> TrainState:
    """Initial state for each member, stacked on a leading member axis.

    A vmapped init.gain rescales the hidden layers' kernels (not the output layer's);
    a vmapped optimizer.lr is written into the injected optimizer hyperparameters;
    a vmapped activation parameter p fills the (frozen) act_<p> parameters.
    """
    members = exp.members if members is None else members
    x0 = jnp.asarray(exp.dataset.x_train[:1])
    base_gain = exp.config.init.gain

    def one(seed, hp, consts):
        init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
        params, model_state = exp.model.init(init_key, x0)
        if "init.gain" in hp:
            params = jax.tree_util.tree_map_with_path(
                lambda path, a: a * (hp["init.gain"] / base_gain) if _is_hidden_kernel(path)
                else a, params)
        for p in exp.frozen:
            params = {k: (jnp.full_like(v, hp[f"activation.{p}"])
                          if k.startswith("act") and k.partition("_")[2] == p else v)
                      for k, v in params.items()}
        opt_state = exp.tx.init(params)
        if "optimizer.lr" in hp:
            opt_state.hyperparams["learning_rate"] = hp["optimizer.lr"]
        return TrainState(params=params, opt_state=opt_state, model_state=model_state,
                          step=jnp.zeros((), jnp.int32),
                          diverged_at=jnp.full((), -1, jnp.int32), key=data_key, consts=consts)

    hp = {k: jnp.asarray([m[k] for m in members], jnp.float32) for k in exp.config.train.vmap}
    seeds = jnp.asarray([m["seed"] for m in members], jnp.uint32)
    return jax.jit(jax.vmap(one))(seeds, hp, exp.consts(members))


def _is_hidden_kernel(path) -> bool:
    names = [getattr(k, "key", str(k)) for k in path]
    return any("kernel" in str(n) for n in names) and not str(names[0]).startswith("out")


def head_functions(head: str, task: str, scale: float = 1.0):
    """(loss(logits, y), measures(logits, y) -> dict) for the output head and task."""
    if task == "rating":  # one sigmoid unit against ratings scaled to [0, 1]
        def loss(logits, y):
            return jnp.mean((jax.nn.sigmoid(logits[:, 0]) - y) ** 2)

        def measures(logits, y):
            mse = loss(logits, y)
            return {"loss": mse, "acc": jnp.float32(jnp.nan), "rmse": jnp.sqrt(mse) * scale}

        return loss, measures
    if head == "one_vs_all":  # an independent sigmoid per class, binary cross-entropy each
        def loss(logits, y):
            onehot = jax.nn.one_hot(y, logits.shape[-1])
            return optax.sigmoid_binary_cross_entropy(logits, onehot).sum(-1).mean()
    else:
        def loss(logits, y):
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def measures(logits, y):
        return {"loss": loss(logits, y), "acc": metrics.accuracy(logits, y)}

    return loss, measures


ACTIVATION_METRICS = ("act_mean", "act_std", "dead_frac", "sat_frac")


def flags(exp: Experiment, value: bool = False) -> dict[str, bool]:
    """The per-chunk switches of the optional measurements: eval and each active probe."""
    return {"eval": value, **dict.fromkeys(exp.config.probes.active, value)}


MAP_ON_CPU = ("cnn", "resnet", "transformer")  # batched convolutions/attention: slower on CPU


def member_loop(exp: Experiment) -> str:
    """'vmap' or 'map': how the chunk runs its members (train.member_loop, auto resolved).

    Both give each member the same computation. vmap batches them into one set of
    wider operations; XLA's CPU backend runs batched (grouped) convolutions and
    attention slower than the same operations one member at a time, so auto maps
    over members for those models on a single CPU device. Members sharded over
    several devices need vmap.
    """
    choice = exp.config.train.member_loop
    if choice != "auto":
        return choice
    single_cpu = jax.default_backend() == "cpu" and jax.local_device_count() == 1
    return "map" if single_cpu and exp.config.model.name in MAP_ON_CPU else "vmap"


def make_chunk(exp: Experiment) -> Callable:
    """The jitted, member-vmapped chunk function (state donated).

    `chunk(state, d, n_plain, apply, flags)`: flags["eval"] and flags[<probe>]
    switch the test-split evaluation and each probe on for this chunk's
    measured step (lax.cond: a switched-off measurement costs nothing).
    """
    model, tx, batch_size = exp.model, exp.tx, exp.config.train.batch_size
    n_train = exp.dataset.x_train.shape[0]
    selected = set(exp.config.train.metrics)
    want_delta = "delta_norm" in selected
    want_capture = bool(selected & set(ACTIVATION_METRICS))
    probes_cfg = exp.config.probes.active
    loss_of, measures = head_functions(exp.config.model.head, exp.dataset.task,
                                       exp.dataset.meta.get("scale", 1.0))

    def loss_fn(params, eps, model_state, x, y, rng):
        logits, _, new_state = model.apply(params, model_state, x, eps, train=True, rng=rng)
        return loss_of(logits, y), new_state

    def batch(state, d):
        if batch_size >= n_train:  # full-batch gradient descent, examples in order
            return d["x_train"], d["y_train"]
        idx = jax.random.randint(jax.random.fold_in(state.key, state.step), (batch_size,), 0,
                                 n_train)
        return d["x_train"][idx], d["y_train"][idx]

    def step_rng(state):  # dropout key of this step, independent of the batch key
        return jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1)

    def commit(state, loss, updates, new_opt, new_model_state, apply):
        # a non-finite loss marks divergence (non-finite gradients make the next loss so);
        # checking the loss only keeps a reduction over every gradient out of each step
        finite = jnp.isfinite(loss)
        live = state.diverged_at < 0
        ok = finite & live & apply
        # A member that is not `ok` keeps its parameters: its update is zeroed before it is
        # added (one fused pass with the optimizer's, cheaper than selecting between old and
        # new parameters afterwards). The optimizer state need not freeze (such a member
        # never applies an update again, or this is the final measurement).
        gated = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), updates)
        return state.replace(
            params=optax.apply_updates(state.params, gated), opt_state=new_opt,
            model_state=jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_model_state,
                                     state.model_state),
            step=state.step + apply.astype(jnp.int32),
            diverged_at=jnp.where(live & ~finite & apply, state.step, state.diverged_at))

    def plain_step(state, d):
        x, y = batch(state, d)
        (loss, ms), g = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, None, state.model_state, x, y, step_rng(state))
        updates, opt = tx.update(g, state.opt_state, state.params)
        return commit(state, loss, updates, opt, ms, jnp.bool_(True))

    def evaluate(params, model_state, d):
        logits, _, _ = model.apply(params, model_state, d["x_test"])
        return {f"eval/{k}": v for k, v in measures(logits, d["y_test"]).items()}

    def probe_loss(model_state):  # eval mode: deterministic, per-example separable
        def f(params, x, y):
            return loss_of(model.apply(params, model_state, x)[0], y)
        return f

    def hessian(params, model_state, d, key):
        f = probe_loss(model_state)
        lam = probes.hessian_top_eig(lambda p: f(p, d["x_probe"], d["y_probe"]), params, key,
                                     probes_cfg["hessian"].iters)
        return {"hessian/top_eig": lam}

    def noise(params, model_state, d, key):
        return probes.noise_scale(probe_loss(model_state), params, d["x_probe"], d["y_probe"],
                                  probes_cfg["noise_scale"].chunk)

    def switched(fn, on, *args):
        """fn(*args) when `on`, else NaNs of the same structure."""
        def off(*a):
            out = jax.eval_shape(fn, *a)
            return jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), out)
        return jax.lax.cond(on, fn, off, *args)

    def zeros_like_z(params, model_state, x):
        shapes = jax.eval_shape(lambda p, ms, x: model.apply(p, ms, x, capture=True)[1]["z"],
                                params, model_state, x)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def measured_step(state, d, apply, on):
        x, y = batch(state, d)
        eps = zeros_like_z(state.params, state.model_state, x) if want_delta else None
        (loss, ms), (g, g_eps) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, eps, state.model_state, x, y, step_rng(state))
        updates, opt = tx.update(g, state.opt_state, state.params)
        m = metrics.parameter_metrics(model.layer_sqnorms, state.params, g, updates)
        if want_delta:
            m["delta_norm"] = metrics.delta_norm(g_eps)
        logits, aux, _ = model.apply(state.params, state.model_state, d["x_probe"],
                                     capture=want_capture)
        m.update({f"train/{k}": v for k, v in measures(logits, d["y_probe"]).items()})
        if want_capture:
            c = state.consts
            m.update(metrics.activation_metrics(aux["z"], aux["h"], aux["dphi"], c["sat_lo"],
                                                c["sat_hi"], c["dphi_max"]))
        m = {k: v for k, v in m.items()
             if k.startswith("train/") or k.partition("/")[0] in selected}
        m.update(model.activation_params(state.params))
        m.update(switched(evaluate, on["eval"], state.params, state.model_state, d))
        probe_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 2)
        for name, fn in (("hessian", hessian), ("noise_scale", noise)):
            if name in probes_cfg:
                m.update(switched(fn, on[name], state.params, state.model_state, d, probe_key))
        new = commit(state, loss, updates, opt, ms, apply)
        m["diverged_at"] = new.diverged_at
        return new, m

    def chunk(state, d, n_plain, apply, on):
        state, m = measured_step(state, d, apply, on)
        state = jax.lax.fori_loop(0, n_plain, lambda _, s: plain_step(s, d), state)
        return state, m

    if member_loop(exp) == "map":
        def many(state, d, n_plain, apply, on):
            return jax.lax.map(lambda s: chunk(s, d, n_plain, apply, on), state)
    else:
        many = jax.vmap(chunk, in_axes=(0, None, None, None, None))

    def members_chunk(state, d, n_plain, apply, on):
        if jax.tree.leaves(state)[0].shape[0] > 1:
            return many(state, d, n_plain, apply, on)
        # one member: run it without the vmap axis (XLA's batched dots over a size-1 axis
        # are slower than plain ones); squeezing and restoring the axis are free reshapes
        one = functools.partial(jax.tree.map, lambda a: a[0])
        state, m = chunk(one(state), d, n_plain, apply, on)
        return jax.tree.map(lambda a: a[None], (state, m))

    return jax.jit(members_chunk, donate_argnums=0)


# --------------------------------------------------------------------------- #
# Host side: records, convergence summaries, the driver.

SUMMARY_INTERVAL = 1.0  # seconds between the summary.json rewrites made while a run trains

PER_MEMBER_SUMMARY = ("final_train_loss", "final_eval_loss", "final_eval_acc", "best_eval_acc",
                      "steps_to_target", "time_to_target", "time_to_target_excl_compile",
                      "loss_auc", "diverged_at")


class Tracker:
    """Convergence summary of one member, updated record by record."""

    def __init__(self, member: dict[str, Any], target: Target | None):
        self.member, self.target = dict(member), target
        self.compile_seconds = 0.0
        self.losses: list[float] = []
        self.s: dict[str, Any] = dict.fromkeys(PER_MEMBER_SUMMARY)

    def update(self, r: dict[str, Any]) -> None:
        if r.get("train/loss") is not None:
            self.losses.append(r["train/loss"])
            self.s["final_train_loss"] = r["train/loss"]
            self.s["loss_auc"] = float(np.mean(self.losses))
        if "eval/acc" in r:
            self.s["final_eval_loss"], self.s["final_eval_acc"] = r["eval/loss"], r["eval/acc"]
            best = self.s["best_eval_acc"]
            if r["eval/acc"] is not None and (best is None or r["eval/acc"] > best):
                self.s["best_eval_acc"] = r["eval/acc"]
        t = self.target
        if (t and self.s["steps_to_target"] is None and r.get(t.key) is not None
                and t.met(r[t.key])):
            self.s["steps_to_target"], self.s["time_to_target"] = r["step"], r["wall_time"]
            self.s["time_to_target_excl_compile"] = round(r["wall_time"] - self.compile_seconds,
                                                          4)

    def summary(self) -> dict[str, Any]:
        return {**self.member, **self.s}


def aggregate(members: list[dict[str, Any]], ci: bool = True) -> dict[str, Any]:
    """Mean, std, count and 95% bootstrap interval of the mean over members, per field.

    With ci=False (the summaries written while training runs) the interval is
    left out: resampling at every log step would take host time from training.
    """
    from actlab.analysis import bootstrap_ci

    out: dict[str, Any] = {}
    for k in PER_MEMBER_SUMMARY:
        vals = [m[k] for m in members if isinstance(m.get(k), (int, float))]
        out[k] = {"mean": float(np.mean(vals)) if vals else None,
                  "std": float(np.std(vals)) if vals else None, "n": len(vals),
                  "ci95": list(bootstrap_ci(vals)) if vals and ci else None}
    return out


def to_records(m: dict[str, np.ndarray], step: int, wall: float,
               members: list[dict[str, Any]], on: dict[str, bool]) -> list[dict[str, Any]]:
    """Flatten one chunk's metrics ([members, ...] arrays) into per-member records.

    Each record carries the member's seed and its vmapped hyperparameter values.
    Members that diverged before `step` are frozen and get no more records.
    Keys of switched-off measurements (`<name>/...` with on[name] false) are left out.
    """
    off = tuple(f"{k}/" for k, v in on.items() if not v)
    names: list[str] = []
    cols = []
    for k, v in m.items():  # one [members, keys] table, converted to Python floats at once
        if k == "diverged_at" or (off and k.startswith(off)):
            continue
        v = np.asarray(v)
        if v.ndim == 1:
            names.append(k)
            cols.append(v[:, None])
        else:
            flat = v.reshape(v.shape[0], -1)
            names += [f"{k}/{l}" for l in range(flat.shape[1])]
            cols.append(flat)
    table = np.concatenate(cols, 1).astype(np.float64).tolist() if cols else [[]] * len(members)
    div = np.asarray(m["diverged_at"])
    records = []
    for i, member in enumerate(members):
        if 0 <= div[i] < step:
            continue
        r: dict[str, Any] = {"step": step, **files.clean(member), "wall_time": round(wall, 4),
                             "member": i}
        r.update(zip(names, (x if math.isfinite(x) else None for x in table[i]), strict=True))
        records.append(r)
    return records


def run_group(config: Config) -> str:
    """A short name of the configuration (W&B group): what differs from the defaults."""
    parts = [config.activation.name, config.model.name, f"d{config.model.depth}",
             config.dataset.name, f"{config.optimizer.name}"
             + (f"@{config.optimizer.lr:g}" if "optimizer.lr" not in config.train.vmap else "")]
    parts += [f"{k}={v}" for k, v in sorted(config.activation.params.items())]
    return " ".join(parts)


class RunDirError(RuntimeError):
    """The run directory cannot be used (one line, with what to do)."""


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that may change between a run and its resumption."""
    out = json.loads(json.dumps(files.clean(cfg)))
    for key in ("resume", "checkpoint_every", "checkpoint_keep"):
        out.get("train", {}).pop(key, None)
    out.pop("logger", None)
    return out


def _prepare_dir(config: Config, run_dir: Path) -> tuple[str, int | None]:
    """Decide how to start in `run_dir`: ("done", None), ("resume", step) or ("fresh", None).

    Fresh starts remove an earlier attempt's metrics and checkpoints; a resume
    keeps them. A directory holding a run of a different configuration is
    never touched.
    """
    from actlab import checkpoint

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".actlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to run directory {run_dir}: {e.strerror}; choose "
                          f"another with hydra.run.dir=... (or hydra.sweep.dir=...)") from None
    resume = config.train.resume
    summary_path = run_dir / files.SUMMARY_FILE
    old = None
    if summary_path.exists():
        try:
            old = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
    if resume is not False and old is not None:
        if _comparable(old.get("config") or {}) != _comparable(config.to_dict()):
            raise RunDirError(f"{run_dir} holds a run of a different configuration; use "
                              f"another directory, or train.resume=false to overwrite it")
        if old.get("status") in ("completed", "diverged"):
            return "done", None
    step = checkpoint.latest_step(run_dir) if resume is not False else None
    if step is not None:
        return "resume", step
    if resume is True:
        print(f"train.resume=true but {run_dir} has no checkpoint: starting fresh", flush=True)
    (run_dir / files.METRICS_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / checkpoint.CHECKPOINT_DIR, ignore_errors=True)
    return "fresh", None


def run(config: Config, run_dir: str | os.PathLike, progress: bool | None = None,
        sinks: list[writers.Writer] | None = None, label: str = "") -> dict[str, Any]:
    """Train every member of `config`, writing records and summaries into `run_dir`.

    With checkpoints on, a killed run continues from its latest checkpoint when
    started again in the same directory (train.resume=auto or true); records the
    killed process wrote after that checkpoint are dropped, so metrics.jsonl ends
    with exactly one record per (step, member). A completed run is not retrained.
    """
    from actlab import checkpoint

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    tc = config.train
    mode, start = _prepare_dir(config, run_dir)
    if mode == "done":
        summary = json.loads((run_dir / files.SUMMARY_FILE).read_text())
        print(f"{run_dir}: already {summary['status']}, skipped", flush=True)
        return summary
    exp = build(config)
    members = exp.members
    trackers = [Tracker(m, tc.target) for m in members]
    summary: dict[str, Any] = {"config": config.to_dict(), "status": "running", "seeds": [],
                               "aggregate": {}}
    d = device_data(exp)
    state = init_state(exp, members)
    ckpt = checkpoint.Checkpoints(run_dir, tc.checkpoint_keep) if (
        tc.checkpoint_every > 0 or mode == "resume") else None
    if mode == "resume":
        state = ckpt.restore(start, state)
        kept = _replay_records(run_dir, start, members, trackers)
        t0 -= max((r["wall_time"] for r in kept), default=0.0)
        summary["resumed_from"] = start
        print(f"resuming {run_dir} from step {start}", flush=True)
    context = {"options": config.logger.wandb, "config": config.to_dict(), "members": members,
               "group": run_group(config)}
    writer = (writers.AsyncWriter(writers.MultiWriter(sinks)) if sinks is not None else
              writers.make_writer(config.logger.sinks, run_dir, **context))
    state, d, summary["devices"] = shard_members(state, d)
    try:
        t_compile = time.perf_counter()
        chunk = make_chunk(exp).lower(state, d, 0, True, flags(exp, True)).compile()
        summary["compile_seconds"] = round(time.perf_counter() - t_compile, 3)
        for tr in trackers:
            tr.compile_seconds = summary["compile_seconds"]
        t_train = time.perf_counter()
        log_steps = list(range(0, tc.steps, tc.log_every)) + [tc.steps]
        j0 = log_steps.index(start) if start is not None else 0
        bar = tqdm(total=tc.steps, initial=log_steps[j0], unit="step", dynamic_ncols=True,
                   disable=not (config.logger.progress if progress is None else progress),
                   desc=f"{label}{config.model.name} {config.activation.name} "
                        f"d{config.model.depth}")
        pending, last_summary = None, -math.inf

        def emit(p, running=True):  # the running summary.json: at most every SUMMARY_INTERVAL
            nonlocal last_summary
            due = running and time.perf_counter() - last_summary >= SUMMARY_INTERVAL
            if due:
                last_summary = time.perf_counter()
            return _emit(p, writer, trackers, members, bar, summary, t0, due)

        last_div = np.asarray(jax.device_get(state.diverged_at))
        every = {"eval": tc.eval_every,
                 **{k: p.every for k, p in config.probes.active.items()}}

        def due(e, j):  # the first log step at or after each multiple of e
            t = log_steps[j]
            return t == tc.steps or t == 0 or (e > 0 and t // e > log_steps[j - 1] // e)

        for j in range(j0, len(log_steps)):
            t = log_steps[j]
            final = t == tc.steps
            if ckpt is not None and tc.checkpoint_every > 0 and j > j0 and due(
                    tc.checkpoint_every, j):
                # records of every step before t reach the disk before the checkpoint of t
                if pending is not None:
                    last_div = emit(pending)
                    pending = None
                writer.flush()
                ckpt.save(t, state)
            n_plain = 0 if final else log_steps[j + 1] - t - 1
            on = {k: due(e, j) for k, e in every.items()}
            state, m = chunk(state, d, n_plain, not final, on)
            if pending is not None:
                last_div = emit(pending)
            pending = (t, m, on, (0 if final else n_plain + 1))
        last_div = emit(pending, running=False)  # the final summary is written below
        bar.close()
        summary["train_seconds"] = round(time.perf_counter() - t_train, 4)  # after compiling
        if ckpt is not None:
            ckpt.wait()
        summary["status"] = "diverged" if np.all(last_div >= 0) else "completed"
    except BaseException:
        summary["status"] = "failed"
        raise
    finally:
        summary["seeds"] = [tr.summary() for tr in trackers]
        summary["aggregate"] = aggregate(summary["seeds"])
        summary["wall_time"] = round(time.perf_counter() - t0, 3)
        writer.write_summary(summary, final=True)
        writer.close(failed=summary["status"] == "failed")
        if ckpt is not None:
            ckpt.close()
    return summary


def _replay_records(run_dir: Path, start: int, members: list[dict[str, Any]],
                    trackers: list[Tracker]) -> list[dict[str, Any]]:
    """Keep the records before `start`, feed them to the trackers, rewrite metrics.jsonl."""
    path = run_dir / files.METRICS_FILE
    records, _ = files.read_metrics(path)
    kept = [r for r in records if r["step"] < start]
    index = {tuple(m.items()): i for i, m in enumerate(members)}
    for r in kept:
        i = index.get(tuple((k, r.get(k)) for k in members[0]))
        if i is not None:
            trackers[i].update(dict(r))
    files.rewrite_metrics(path, kept)
    return kept


def _emit(pending, writer, trackers, members, bar, summary, t0,
          summary_due: bool) -> np.ndarray:
    """Fetch one chunk's metrics, write its records, update trackers and the bar.

    The running summary.json is rewritten only when `summary_due` (the driver asks
    at most once every SUMMARY_INTERVAL seconds): a rewrite per log step would take
    host time from training on a small machine, and the records are on disk anyway.
    """
    t, m, on, advance = pending
    m = jax.device_get(m)
    wall = time.perf_counter() - t0
    records = to_records(m, t, wall, members, on)
    div = np.asarray(m["diverged_at"])
    for r in records:
        trackers[r["member"]].update(r)
    for tr, dv in zip(trackers, div, strict=True):
        tr.s["diverged_at"] = int(dv) if dv >= 0 else None
    writer.write_records(records)
    if summary_due:
        summary["seeds"] = [tr.summary() for tr in trackers]
        summary["aggregate"] = aggregate(summary["seeds"], ci=False)
        summary["wall_time"] = round(wall, 3)
        writer.write_summary(dict(summary))
    losses = np.asarray(m["train/loss"], dtype=float)
    finite = losses[np.isfinite(losses)]
    post = {"loss": f"{finite.mean():.3g}" if finite.size else "diverged"}
    accs = [tr.s["final_eval_acc"] for tr in trackers if tr.s["final_eval_acc"] is not None]
    if accs:
        post["eval_acc"] = f"{np.mean(accs):.3f}"
    bar.set_postfix(post, refresh=False)
    bar.update(advance)
    return div


def replay(config: Config, steps: list[int],
           dataset: data.Dataset | None = None) -> tuple[Experiment, dict[int, Any]]:
    """Retrain `config` (deterministically, nothing written) and snapshot it at `steps`.

    Batches are keyed by the step number, so the trajectory does not depend on
    where chunks start: the snapshots equal the original run's parameters.
    Each snapshot is {"params": ..., "model_state": ...} with a leading member axis.
    """
    exp = build(config, dataset)
    d, chunk = device_data(exp), make_chunk(exp)
    state = init_state(exp)
    snaps: dict[int, Any] = {}
    t = 0
    for s in sorted({int(s) for s in steps if 0 <= s <= config.train.steps}):
        if s > t:
            state, _ = chunk(state, d, s - t - 1, True, flags(exp))
            t = s
        snaps[s] = jax.device_get({"params": state.params, "model_state": state.model_state})
    return exp, snaps


def forward(exp: Experiment, snapshot: Any, x: np.ndarray, member: int = 0) -> dict[str, Any]:
    """Output probabilities and per-layer z, h, phi' of one member (eval mode) on inputs x."""
    snap = jax.tree.map(lambda a: jnp.asarray(a[member]), snapshot)

    def fwd(snap, x):
        return exp.model.apply(snap["params"], snap["model_state"], x, capture=True)[:2]

    logits, aux = jax.jit(fwd)(snap, jnp.asarray(x))
    out = {k: (np.asarray(v) if not isinstance(v, list) else [np.asarray(a) for a in v])
           for k, v in aux.items()}
    if exp.dataset.task == "rating":
        out["probs"] = np.asarray(jax.nn.sigmoid(logits))
    elif exp.config.model.head == "one_vs_all":
        out["probs"] = np.asarray(jax.nn.sigmoid(logits))
    else:
        out["probs"] = np.asarray(jax.nn.softmax(logits, -1))
    return out
