"""The compiled program: several log steps per call, every member at once.

`make_program(exp, per_call, lay, loops)` returns a `Program`: `program(state, d, plan) ->
(state, m)`, or `program.lower(state, d, plan).compile()` ahead of time, the state donated.
`plan` (from `plan_arrays`) holds, for each of the call's `per_call` slots, its step and
plain-step count, whether the measured step's update is applied, whether the slot is used
(unused ones pad a short call), and which periodic measurements (eval, probes, task ends) run.

Shaped for accelerators, where a loop of unknown trip count and each conditional may cost a
device-to-host round trip: the slots run under lax.scan (the measured step traced once);
each slot measures theta_t and applies that step's update (each periodic measurement
switched by one lax.cond), then runs its plain steps in fori_loops of compile-time trip
counts (cadence.loops: one for a run logged every log_every steps) with no conditional in
their bodies, each loop switched on or off once per slot (loops=None: one loop of a traced
count, for replays of arbitrary intervals). A slot's plain steps are all of one task (the
cadence puts a log step at every task's start); a periodic intervention (plasticity) is
traced into them only when one falls there. `m` comes back as one array, fetched in one
transfer: `m.fetch()` gives the measurements stacked [members, per_call, ...].
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from actlab import sinks
from actlab.engine import cadence, devices, step
from actlab.engine.cadence import Call
from actlab.engine.devices import MEMBERS, Layout
from actlab.engine.experiment import Experiment
from actlab.engine.plasticity import Intervention
from actlab.engine.state import MEMBER_AXIS, TrainState
from actlab.measure import probes
from actlab.measure.heads import Head
from actlab.measure.probes.base import per_layer

MAP_ON_CPU = ("cnn", "resnet", "transformer")  # batched convolutions/attention: slower on CPU


def member_loop(exp: Experiment) -> str:
    """'vmap' or 'map': how the program runs its members (train.member_loop, auto resolved).

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


# replicated: the program splits the batches it draws (and a task's examples by class)
TRAIN_SPLIT = ("x_train", "y_train", "class_index", "class_count")


def over_members(fn: Callable, how: str, spmd_axis: str | None = None) -> Callable:
    """fn(state, *shared) for one member, lifted to states with a leading member axis.

    how: "vmap" (batched) or "map" (one member after another). A single member runs
    without the axis (XLA's batched dots over a size-1 axis are slower than plain
    ones); squeezing and restoring the axis are free reshapes. `spmd_axis`: the mesh axis
    the member axis is split over (vmap's spmd_axis_name), when it is.
    """
    def lifted(state: TrainState, *shared: Any) -> Any:
        if jax.tree.leaves(state)[0].shape[0] == 1:
            out = fn(jax.tree.map(lambda a: a[0], state), *shared)
            return jax.tree.map(lambda a: a[None], out)
        if how == "map":
            return jax.lax.map(lambda s: fn(s, *shared), state)
        return jax.vmap(fn, in_axes=(0, *[None] * len(shared)), axis_name=MEMBER_AXIS,
                        spmd_axis_name=spmd_axis)(state, *shared)

    return lifted


def histogram_bins(exp: Experiment) -> int:
    """Bins of the pre-activation histograms measured at log steps (0: none measured)."""
    lc = exp.config.logger
    return lc.histogram_bins if sinks.histograms_wanted(lc.sinks) else 0


def measurement_names(exp: Experiment) -> tuple[str, ...]:
    """The periodic measurements a slot can switch on: eval, each active probe, and the
    task ends of a task sequence."""
    ends = (cadence.TASK_END,) if exp.tasks.continual else ()
    return ("eval", *exp.config.probes.active, *ends)


def probe_functions(exp: Experiment, head: Head) -> dict[str, Callable]:
    """Each active probe as fn(params, model_state, x, y, key) -> measurements (one member).

    Their keys start with the probe's name (`hessian/`, `noise_scale/`, ...), which is how
    records leave out the probes not run at a step.
    """
    def split(fn: Callable) -> Callable:  # `<key>_layer` arrays -> `<key>/<l>` scalars
        return lambda *args: per_layer(fn(*args))

    return {name: split(probes.get(name).make(settings, exp.model, head))
            for name, settings in exp.config.probes.active.items()}


def plan_arrays(call: Call, per_call: int, names: tuple[str, ...]) -> dict[str, Any]:
    """A call's slots as arrays of length per_call (unused slots padded, inactive)."""
    pad = per_call - len(call.slots)
    if pad < 0:
        raise ValueError(f"a call of {len(call.slots)} slots in a program of {per_call}")

    def col(values: Iterable[Any], dtype: npt.DTypeLike) -> np.ndarray:
        return np.asarray(list(values) + [0] * pad, dtype)

    return {"step": col((s.step for s in call.slots), np.int32),
            "n_plain": col((s.n_plain for s in call.slots), np.int32),
            "apply": col((s.apply for s in call.slots), bool),
            "active": col((True for _ in call.slots), bool),
            "on": {n: col((s.on.get(n, False) for s in call.slots), bool) for n in names}}


def interventions_in_plain(exp: Experiment, calls: Iterable[Call]) -> bool:
    """Whether a periodic intervention (plasticity redo, shrink_perturb) falls on a plain
    step of these calls. When none does, the plain steps can leave its lax.cond out."""
    slots = [s for c in calls for s in c.slots]
    return _due(exp.plastic, [s.step for s in slots], [s.n_plain for s in slots])


def _due(plastic: Intervention, steps: Iterable[int], counts: Iterable[int]) -> bool:
    if not (plastic.active and plastic.periodic):
        return False
    return bool(np.any(plastic.due(cast(jax.Array, cadence.plain_steps(steps, counts)))))


def pack(m: dict[str, jax.Array]) -> tuple[jax.Array, tuple[Any, tuple]]:
    """The measurements ([members, ...] each, 32 bits or fewer an element) as the bits of one
    uint32 array [members, words], and where each lies in it: the dict's tree and, per
    leaf, its shape for one member and its dtype."""
    leaves, tree = jax.tree.flatten(m)
    if any(a.dtype.itemsize > 4 for a in leaves):
        raise TypeError("a measurement of 64-bit elements: the program packs 32 bits at most")
    words = [a.astype(jnp.uint32) if a.dtype == jnp.bool_ else jax.lax.bitcast_convert_type(
        a, jnp.dtype(f"uint{8 * a.dtype.itemsize}")).astype(jnp.uint32) for a in leaves]
    return (jnp.concatenate([w.reshape(w.shape[0], -1) for w in words], axis=1),
            (tree, tuple((a.shape[1:], np.dtype(a.dtype)) for a in leaves)))


@dataclasses.dataclass(frozen=True)
class Measurements:
    """A call's measurements as the program returns them: one array on the device."""

    packed: jax.Array
    packing: tuple[Any, tuple]  # from `pack`

    def fetch(self) -> dict[str, np.ndarray]:
        """The measurements on the host ([members, per_call, ...] each), in one transfer."""
        packed = np.asarray(jax.device_get(self.packed))
        tree, fields = self.packing
        out, at = [], 0
        for shape, dtype in fields:
            w = packed[:, at:at + math.prod(shape)]
            at += w.shape[1]
            a = w != 0 if dtype == np.bool_ else w.astype(f"uint{8 * dtype.itemsize}").view(dtype)
            out.append(a.reshape(-1, *shape))
        return jax.tree.unflatten(tree, out)


class Program:
    """One experiment's program for any call.

    `sizes`: the trip counts of the loops every call's plain steps run in (cadence.loops
    over the run); None: one loop of each slot's count, traced (any plan, one program, a
    loop of unknown trip count: for replays of arbitrary intervals). The plan goes to the
    device as one int32 array, a row per slot (step, apply, active, a flag per loop or the
    count, a switch per periodic measurement), and the measurements come back as one.
    """

    def __init__(self, build: Callable[[tuple[int, ...] | None, dict[str, Any]], Any],
                 names: tuple[str, ...], skipped: Intervention | None,
                 sizes: tuple[int, ...] | None):
        self.names, self.skipped, self.sizes = names, skipped, sizes
        self.traced: dict[str, Any] = {}  # "packing" (of `pack`), set when it is traced
        self.jitted = build(sizes, self.traced)

    def rows(self, plan: dict[str, Any]) -> np.ndarray:
        """The plan as one int32 array [slots, columns] (a plan the loops cannot run, or one
        that needs the interventions left out of them, refused)."""
        used = np.asarray(plan["active"], bool)
        steps, n_plain = np.asarray(plan["step"]), np.asarray(plan["n_plain"])
        if self.skipped is not None and _due(self.skipped, steps[used], n_plain[used]):
            raise ValueError("a periodic intervention on a plain step, given to a program "
                             "made without them there (plain_interventions=False)")
        loops = ([n_plain] if self.sizes is None else
                 np.asarray([cadence.split(int(n) if u else 0, self.sizes) for n, u in
                             zip(n_plain, used, strict=True)]).reshape(len(steps), -1).T)
        cols = [steps, plan["apply"], used, *loops, *(plan["on"][k] for k in self.names)]
        return np.stack([np.asarray(c, np.int32) for c in cols], axis=1)

    def lower(self, state: TrainState, d: dict[str, jax.Array], plan: dict[str, Any]) -> Stage:
        return Stage(self, self.jitted.lower(state, d, self.rows(plan)))

    def __call__(self, state: TrainState, d: dict[str, jax.Array],
                 plan: dict[str, Any]) -> tuple[TrainState, Measurements]:
        return Stage(self, self.jitted)(state, d, plan)


@dataclasses.dataclass(frozen=True)
class Stage:
    """The program at one of jax's stages: jitted or compiled (called with any plan its
    loops run), or lowered (`compile()`). jax's stage answers the rest (as_text, ...)."""

    program: Program
    jax: Any

    def compile(self) -> Stage:
        return Stage(self.program, self.jax.compile())

    def __call__(self, state: TrainState, d: dict[str, jax.Array],
                 plan: dict[str, Any]) -> tuple[TrainState, Measurements]:
        state, packed = self.jax(state, d, self.program.rows(plan))
        return state, Measurements(packed, self.program.traced["packing"])

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "jax"), name)


def make_program(exp: Experiment, per_call: int = 1, lay: Layout | None = None,
                 loops: tuple[int, ...] | None = None,
                 plain_interventions: bool = True) -> Program:
    """The member-mapped, jitted program of `per_call` slots (state donated) whose plain steps
    run in loops of the trip counts `loops` (None: a traced count, see Program).

    With a layout that splits the batch (train.shard=batch), every batch the program draws,
    the probe batch and the evaluation split are split over the mesh's "data" axis.
    `plain_interventions=False` leaves a periodic intervention out of the plain steps (see
    `interventions_in_plain`); a plan that has one there is then refused.
    """
    lay = lay or Layout()
    cfg = exp.config
    model, tx, tasks = exp.model, exp.tx, exp.tasks
    plastic = exp.plastic if exp.plastic.active else None
    in_plain = plastic if plain_interventions else None
    head = exp.head  # model.loss included
    batch_size, selected = cfg.train.batch_size, cfg.train.metrics
    loss = step.loss_fn(model, head, capture=plastic is not None and plastic.needs_h)
    train_step = functools.partial(step.train_step, model=model, tx=tx, loss_fn=loss,
                                   plastic=plastic)
    evaluate = functools.partial(step.evaluate, model=model, head=head)
    probe_fns = probe_functions(exp, head)
    bins = histogram_bins(exp)
    task_length = cfg.task.length
    names = measurement_names(exp)

    def draw(state: TrainState, d: dict[str, jax.Array],
             tp: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        if tasks.by_class:
            batch = tasks.draw(step.step_key(state), d, batch_size, tp)
        else:
            batch = tasks.view(*step.draw_batch(state, d["x_train"], d["y_train"], batch_size),
                               tp)
        return lay.constrain_batch(batch)

    def plain(state: TrainState, d: dict[str, jax.Array], tp: dict[str, jax.Array],
              at: jax.Array) -> TrainState:
        batch = draw(state, d, tp)
        if in_plain is not None:
            state = in_plain.before(state, at, batch[0])
        return train_step(state, batch, step.stream_key(state, step.STREAM_DROPOUT))[0]

    def task_end(params: Any, model_state: Any, d: dict[str, jax.Array],
                 at: jax.Array) -> dict[str, jax.Array]:
        """The finished task (the one before step `at`) and the first, on their test splits."""
        finished = (at - 1) // task_length
        out = {f"{cadence.TASK_END}/task": finished.astype(jnp.float32)}
        for name, t in (("", finished), ("first_", jnp.zeros((), jnp.int32))):
            tp = tasks.params(t)
            x, y = tasks.view(d["x_test"], d["y_test"], tp)
            m = evaluate(params, model_state, x, y, weights=tasks.weights(y, tp),
                         prefix=cadence.TASK_END)
            out.update({f"{cadence.TASK_END}/{name}{k.rpartition('/')[2]}": v
                        for k, v in m.items()})
        return out

    def measured(state: TrainState, d: dict[str, jax.Array], s: dict[str, Any],
                 tp: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        apply, on, at = s["apply"], s["on"], s["step"]
        m: dict[str, jax.Array] = {}
        if tasks.continual:  # before the intervention that may open the next task
            m.update(step.switched(lambda p, ms: task_end(p, ms, d, at), on[cadence.TASK_END],
                                   state.params, state.model_state))
            m["task"] = tasks.index(at)
        batch = draw(state, d, tp)
        if plastic is not None:
            state = plastic.before(state, at, batch[0])
        x_fixed, y_fixed = tasks.view(d["x_fixed"], d["y_fixed"], tp)
        eps = (step.zero_perturbation(model, state.params, state.model_state, batch[0])
               if "delta_norm" in selected else None)
        new, out = train_step(state, batch, step.stream_key(state, step.STREAM_DROPOUT),
                              apply=apply, eps=eps)
        m.update(step.measure(state, out, x_fixed, y_fixed, model=model, head=head,
                              selected=selected, hist_bins=bins,
                              dormant_tau=cfg.train.dormant_tau))
        if "preact_drift" in selected:
            new = drift(new, m, at)
        x_test, y_test = tasks.view(d["x_test"], d["y_test"], tp)
        m.update(step.switched(
            lambda p, ms, x, y: evaluate(p, ms, x, y, weights=tasks.weights(y, tp)),
            on["eval"], state.params, state.model_state, x_test, y_test))
        key = step.stream_key(state, step.STREAM_PROBES)
        for name, fn in probe_fns.items():
            m.update(step.switched(fn, on[name], state.params, state.model_state,
                                   x_fixed, y_fixed, key))
        m["diverged_at"] = new.diverged_at
        return new, m

    def drift(new: TrainState, m: dict[str, jax.Array], at: jax.Array) -> TrainState:
        """preact_*_drift: the change since the task's first step, whose values the state
        keeps (set here at that step)."""
        first = tasks.starts(at)
        cur = {"mean": m["preact_mean"], "std": m["preact_std"]}
        ref = jax.tree.map(lambda c, r: jnp.where(first, c, r), cur, new.extra["ref"])
        m["preact_mean_drift"] = cur["mean"] - ref["mean"]
        m["preact_std_drift"] = cur["std"] - ref["std"]
        return new.replace(extra={**new.extra, "ref": ref})

    def slot(state: TrainState, d: dict[str, jax.Array], s: dict[str, Any],
             sizes: tuple[int, ...] | None) -> tuple[TrainState, dict[str, jax.Array]]:
        tp = tasks.params(tasks.index(s["step"]))  # one task per slot (cadence)
        state, m = measured(state, d, s, tp)
        at = s["step"] + 1
        if sizes is None:
            return jax.lax.fori_loop(0, s["loops"][0], lambda i, st: plain(st, d, tp, at + i),
                                     state), m
        for size, on in zip(sizes, s["loops"], strict=True):  # each: one cond, then a loop
            def steps(st: TrainState, size: int = size, at: jax.Array = at) -> TrainState:
                return jax.lax.fori_loop(0, size, lambda i, st: plain(st, d, tp, at + i), st)

            state = jax.lax.cond(on, steps, lambda st: st, state)
            at = at + on * size
        return state, m

    def one_member(state: TrainState, d: dict[str, jax.Array], plan: dict[str, Any],
                   sizes: tuple[int, ...] | None) -> tuple[TrainState, dict[str, jax.Array]]:
        if per_call == 1:
            state, m = slot(state, d, jax.tree.map(lambda a: a[0], plan), sizes)
            return state, jax.tree.map(lambda a: a[None], m)

        def body(state: TrainState,
                 s: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
            def skip(st: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
                # an unused slot of the call's tail: nothing runs
                shapes = jax.eval_shape(lambda st: slot(st, d, s, sizes), st)[1]
                return st, step.placeholder(shapes)

            return jax.lax.cond(s["active"], lambda st: slot(st, d, s, sizes), skip, state)

        return jax.lax.scan(body, state, plan)

    how = "vmap" if lay.splits_members else member_loop(exp)
    spmd = MEMBERS if lay.splits_members else None
    out = devices.replicated(lay)

    def build(sizes: tuple[int, ...] | None, traced: dict[str, Any]) -> jax.stages.Wrapped:
        members = over_members(functools.partial(one_member, sizes=sizes), how, spmd)

        def program(state: TrainState, d: dict[str, jax.Array],
                    rows: jax.Array) -> tuple[TrainState, jax.Array]:
            at = 4 if sizes is None else 3 + len(sizes)  # the columns of Program.rows
            plan = {"step": rows[:, 0], "apply": rows[:, 1] != 0, "active": rows[:, 2] != 0,
                    "loops": rows[:, 3:at] if sizes is None else rows[:, 3:at] != 0,
                    "on": {k: rows[:, at + i] != 0 for i, k in enumerate(names)}}
            split = {k: lay.constrain_batch(v) for k, v in d.items() if k not in TRAIN_SPLIT}
            with jax.default_matmul_precision(cfg.train.matmul_precision):  # read when traced
                state, m = members(state, {**d, **split}, plan)
            packed, traced["packing"] = pack(m)
            return state, packed

        if out is None:
            return jax.jit(program, donate_argnums=0)
        return jax.jit(program, donate_argnums=0,
                       out_shardings=(devices.state_sharding(lay), out))

    return Program(build, names, plastic if in_plain is None else None, loops)
