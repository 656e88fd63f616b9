"""The compiled program: several log steps per call, every member at once.

`make_program(exp, per_call)` returns `call(state, d, plan) -> (state, m)`, jitted with
the state donated. `plan` (from `plan_arrays`) holds, for each of the call's
`per_call` slots, its step, the plain-step count, whether the measured step's update is
applied, whether the slot is used at all, and which periodic measurements
(eval, probes, task ends) run. Each slot measures theta_t, applies that step's update,
and runs its plain steps (all of one task: the cadence puts a log step at every task's
start) in a fori_loop with a traced trip count, so one program serves every interval,
the remainder and the final measurement. `m` holds the slots' measurements stacked
[members, per_call, ...].
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from actlab import sinks
from actlab.engine import cadence, devices, step
from actlab.engine.cadence import Call
from actlab.engine.devices import MEMBERS, Layout
from actlab.engine.experiment import Experiment
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


def make_program(exp: Experiment, per_call: int = 1,
                 lay: Layout | None = None) -> jax.stages.Wrapped:
    """The jitted, member-mapped program of `per_call` slots (state donated).

    With a layout that splits the batch (train.shard=batch), every batch the program draws,
    the probe batch and the evaluation split are split over the mesh's "data" axis.
    """
    lay = lay or Layout()
    cfg = exp.config
    model, tx, tasks = exp.model, exp.tx, exp.tasks
    plastic = exp.plastic if exp.plastic.active else None
    head = exp.head  # model.loss included
    batch_size, selected = cfg.train.batch_size, cfg.train.metrics
    loss = step.loss_fn(model, head, capture=plastic is not None and plastic.needs_h)
    train_step = functools.partial(step.train_step, model=model, tx=tx, loss_fn=loss,
                                   plastic=plastic)
    evaluate = functools.partial(step.evaluate, model=model, head=head)
    probe_fns = probe_functions(exp, head)
    bins = histogram_bins(exp)
    task_length = cfg.task.length

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
        if plastic is not None:
            state = plastic.before(state, at, batch[0])
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

    def slot(state: TrainState, d: dict[str, jax.Array],
             s: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        tp = tasks.params(tasks.index(s["step"]))  # one task per slot (cadence)
        state, m = measured(state, d, s, tp)
        state = jax.lax.fori_loop(0, s["n_plain"],
                                  lambda i, st: plain(st, d, tp, s["step"] + 1 + i), state)
        return state, m

    def one_member(state: TrainState, d: dict[str, jax.Array],
                   plan: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        if per_call == 1:
            state, m = slot(state, d, jax.tree.map(lambda a: a[0], plan))
            return state, jax.tree.map(lambda a: a[None], m)

        def body(state: TrainState,
                 s: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
            def skip(st: TrainState) -> tuple[TrainState, dict[str, jax.Array]]:
                # an unused slot of the call's tail: nothing runs
                return st, step.placeholder(jax.eval_shape(slot, st, d, s)[1])

            return jax.lax.cond(s["active"], lambda st: slot(st, d, s), skip, state)

        return jax.lax.scan(body, state, plan)

    how = "vmap" if lay.splits_members else member_loop(exp)
    members = over_members(one_member, how, MEMBERS if lay.splits_members else None)

    def program(state: TrainState, d: dict[str, jax.Array],
                plan: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
        split = {k: lay.constrain_batch(v) for k, v in d.items() if k not in TRAIN_SPLIT}
        with jax.default_matmul_precision(cfg.train.matmul_precision):  # read when traced
            return members(state, {**d, **split}, plan)

    out = devices.replicated(lay)
    if out is None:
        return jax.jit(program, donate_argnums=0)
    return jax.jit(program, donate_argnums=0, out_shardings=(devices.state_sharding(lay), out))

