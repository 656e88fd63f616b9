"""Interventions against lost plasticity: state updates inside the compiled step (one member).

`plasticity.method` picks one; each acts on the hidden units of a dense network (model=mlp)
through the model's label tree: unit i of layer l owns column i of the kernels and biases
producing z_l (a gated layer: columns i and U + i) and row i of the kernel consuming h_l
(CReLU: rows i and U + i), the next layer's or the output layer's.

- redo (Sokar et al. 2023, ReDo): every `every` steps (0: at each new task), on that step's
  batch, unit i's score s_i = E|h_i| / ((1/U) sum_k E|h_k|) (CReLU: its two halves summed);
  units with s_i <= tau get fresh incoming weights (a new draw of the model's
  initialisation), zero outgoing weights, and their optimizer moments (every optimizer
  state entry shaped like the parameters) set to zero.
- cbp (Dohare et al. 2024, continual backpropagation): after every update, each unit's age
  grows by one and its contribution utility u_i <- eta u_i + (1 - eta) E|h_i| sum_j |w_ij|
  (h on the step's batch before the update, w its outgoing weights after it); of the units
  older than `maturity`, rho x (their number) are replaced per step in expectation (the
  fractional part by a coin flip), those of least bias-corrected utility u_i / (1 - eta^age);
  a replaced unit is re-initialised as in redo, its utility and age set to zero.
- shrink_perturb (Ash & Adams 2020): every `every` steps (0: at each new task), every kernel
  and bias theta <- shrink theta + perturb theta_fresh (a fresh initialisation draw); the
  optimizer state is kept.
- l2_init (Kumar et al. 2023, regenerative regularisation): the optimizer gets the gradient of
  loss + l2 ||theta - theta_0||^2 over every kernel and bias (theta_0: the member's
  initialisation); grad_norm still reports the loss's own gradient.

Periodic interventions run at the start of their step, before its update, so a step's
measurement describes the network the update is taken from; a task's end is evaluated before
the intervention that opens the next task. Randomness is the member's own (the state's key,
stream STREAM_PLASTICITY). Adam's step count is shared by all entries, so a reset entry's next
update is about (1 - b1) / sqrt(1 - b2) ~ 3.2 lr in size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from actlab.config import PlasticityConfig
from actlab.engine.state import MEMBER_AXIS, STREAM_PLASTICITY, TrainState, step_key
from actlab.measure.representation import as_matrices
from actlab.models import Model
from actlab.models.base import PyTree, Role

UNIT_MODELS = ("mlp",)  # models whose hidden units the interventions can replace


def _is_role(x: Any) -> bool:
    return isinstance(x, Role)


def _slices(role: Role, x: jax.Array) -> list[tuple[int, jax.Array]]:
    """(layer, array) for each layer a parameter array holds (stacked: one per row)."""
    assert role.layer is not None
    if role.stacked:
        return [(role.layer + i, x[i]) for i in range(x.shape[0])]
    return [(role.layer, x)]


def kernels(model: Model, params: PyTree) -> tuple[dict[int, jax.Array], dict[int, jax.Array]]:
    """Each hidden layer's kernel producing z_l and the kernel consuming h_l (the next
    layer's, or the output layer's for the last), by layer."""
    L = model.num_layers
    producing: dict[int, jax.Array] = {}
    consuming: dict[int, jax.Array] = {}
    for role, x in zip(jax.tree.leaves(model.labels(params), is_leaf=_is_role),
                       jax.tree.leaves(params), strict=True):
        if role.group == "layer" and role.kernel:
            for l, a in _slices(role, x):
                producing[l] = a
                if l > 0:
                    consuming[l - 1] = a
        elif role.group == "out" and role.kernel:
            consuming[L - 1] = x
    return producing, consuming


def units(model: Model, params: PyTree) -> tuple[int, ...]:
    """Units U_l of each hidden layer: z_l has U_l or 2 U_l columns (gated), h_l U_l or 2 U_l
    entries (CReLU)."""
    producing, consuming = kernels(model, params)
    return tuple(min(producing[l].shape[-1], consuming[l].shape[-2])
                 for l in range(model.num_layers))


def unit_sums(values: jax.Array, units: int) -> jax.Array:
    """Per-unit sums of per-entry values [H] (a CReLU unit owns entries i and U + i)."""
    return values.reshape(-1, units).sum(0)


def masks(model: Model, params: PyTree, units: tuple[int, ...],
          replace: list[jax.Array]) -> tuple[PyTree, PyTree]:
    """Trees (like params) of where replaced units' incoming and outgoing weights are.

    `replace[l]` [U_l] bool marks the units of layer l.
    """
    L = model.num_layers

    def cols(l: int, n: int) -> jax.Array:
        return replace[l][jnp.arange(n) % units[l]]

    def leaf(role: Role, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        no = jnp.zeros(x.shape, bool)
        if role.group == "out" and role.kernel:
            return no, jnp.broadcast_to(cols(L - 1, x.shape[-2])[:, None], x.shape)
        if role.group != "layer" or role.layer is None:
            return no, no
        ins, outs = [], []
        for l, a in _slices(role, x):
            ins.append(jnp.broadcast_to(cols(l, a.shape[-1]), a.shape))
            if role.kernel and l > 0:
                outs.append(jnp.broadcast_to(cols(l - 1, a.shape[-2])[:, None], a.shape))
            else:
                outs.append(jnp.zeros(a.shape, bool))
        if role.stacked:
            return jnp.stack(ins), jnp.stack(outs)
        return ins[0], outs[0]

    pairs = jax.tree.map(leaf, model.labels(params), params, is_leaf=_is_role)
    is_pair = lambda t: isinstance(t, tuple)  # noqa: E731
    return (jax.tree.map(lambda t: t[0], pairs, is_leaf=is_pair),
            jax.tree.map(lambda t: t[1], pairs, is_leaf=is_pair))


def reset_moments(opt_state: PyTree, params: PyTree, where: PyTree) -> PyTree:
    """Every optimizer-state subtree shaped like the parameters (Adam's mu and nu, momentum),
    zeroed where `where` is True."""
    structure: Any = jax.tree.structure(params)

    def like_params(node: Any) -> bool:
        return bool(structure == jax.tree.structure(node))

    def fix(node: Any) -> Any:
        if not like_params(node):
            return node
        return jax.tree.map(lambda m, w: jnp.where(w, jnp.zeros_like(m), m), node, where)

    return jax.tree.map(fix, opt_state, is_leaf=like_params)


def outgoing_abs_sums(model: Model, params: PyTree) -> list[jax.Array]:
    """sum_j |w_ij| over each h entry's outgoing weights, per layer ([H_l])."""
    consuming = kernels(model, params)[1]
    return [jnp.sum(jnp.abs(consuming[l]), axis=-1) for l in range(model.num_layers)]


def mean_abs_h(h: Any) -> list[jax.Array]:
    """E|h| per entry of each layer's output over the batch ([H_l] each)."""
    return [jnp.mean(jnp.abs(a.astype(jnp.float32)), 0) for a in as_matrices(h)]


def dormant_units(h: Any, units: tuple[int, ...], tau: float) -> list[jax.Array]:
    """ReDo's dormant units of each layer: s_i <= tau with s_i = a_i / mean_k a_k."""
    out = []
    for a, u in zip(mean_abs_h(h), units, strict=True):
        a_u = unit_sums(a, u)
        out.append(a_u <= tau * jnp.mean(a_u))
    return out


def any_member(pred: jax.Array) -> jax.Array:
    """Whether `pred` holds for any member of the vmapped member axis (itself outside one).

    A condition shared by the members keeps lax.cond a branch under vmap (a batched one
    becomes a select, which runs both sides for every member at every step).
    """
    try:
        return jax.lax.psum(pred.astype(jnp.int32), MEMBER_AXIS) > 0
    except NameError:  # not under the member vmap (one member, or lax.map over members)
        return pred


@dataclasses.dataclass(frozen=True)
class Intervention:
    """One member's intervention (`plasticity.method`), bound to its model and task length."""

    config: PlasticityConfig
    model: Model
    x0: Any  # one input example [1, ...]: the fresh initialisation's shapes
    task_length: int = 0  # steps per task (0: one task)
    steps: int = 2**31 - 1  # the run's length: nothing is done at its final measurement

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def active(self) -> bool:
        return self.method != "none"

    @property
    def periodic(self) -> bool:
        return self.method in ("redo", "shrink_perturb")

    @property
    def needs_h(self) -> bool:
        return self.method == "cbp"

    def init(self, params: PyTree) -> dict[str, Any]:
        """The intervention's entries of a member's state (TrainState.extra['plastic'])."""
        if self.method == "l2_init":
            return {"theta0": params}
        if self.method == "cbp":
            us = units(self.model, params)
            return {"util": [jnp.zeros((u,), jnp.float32) for u in us],
                    "age": [jnp.zeros((u,), jnp.int32) for u in us]}
        return {}

    def due(self, step: jax.Array) -> jax.Array:
        """Whether a periodic intervention runs at the start of `step` (never at step 0 nor at
        the final measurement)."""
        period = self.config.every or self.task_length
        return (step > 0) & (step % max(period, 1) == 0) & (step < self.steps)

    def _weights(self, params: PyTree) -> PyTree:
        """Where the kernels and biases are (shrink_perturb and l2_init act on them only)."""
        return self.model.mask(params, lambda r: r.group in ("layer", "out"))

    def fresh(self, key: jax.Array) -> PyTree:
        return self.model.init(key, self.x0)[0]

    def _replace(self, state: TrainState, replace: list[jax.Array],
                 key: jax.Array) -> TrainState:
        ins, outs = masks(self.model, state.params, units(self.model, state.params), replace)
        fresh = self.fresh(key)
        params = jax.tree.map(lambda p, f, i, o: jnp.where(o, 0.0, jnp.where(i, f, p)).astype(
            p.dtype), state.params, fresh, ins, outs)
        touched = jax.tree.map(jnp.logical_or, ins, outs)
        return state.replace(params=params,
                             opt_state=reset_moments(state.opt_state, state.params, touched))

    def before(self, state: TrainState, step: jax.Array, batch_x: jax.Array) -> TrainState:
        """A periodic intervention at the start of `step` when due (unbatched `step`)."""
        if not self.periodic:
            return state
        key = jax.random.fold_in(step_key(state), STREAM_PLASTICITY)

        def run(st: TrainState) -> TrainState:
            if self.method == "shrink_perturb":
                return self._shrink_perturb(st, key)
            _, aux, _ = self.model.apply(st.params, st.model_state, batch_x, capture=True)
            dormant = dormant_units(aux["h"], units(self.model, st.params), self.config.tau)
            return self._replace(st, dormant, key)

        return jax.lax.cond(self.due(step), run, lambda st: st, state)

    def _shrink_perturb(self, state: TrainState, key: jax.Array) -> TrainState:
        c = self.config
        params = jax.tree.map(lambda p, f, w: jnp.where(w, c.shrink * p + c.perturb * f, p),
                              state.params, self.fresh(key), self._weights(state.params))
        return state.replace(params=params)

    def grads(self, state: TrainState, grads: PyTree) -> PyTree:
        """The gradient the optimizer gets (l2_init adds 2 l2 (theta - theta_0))."""
        if self.method != "l2_init":
            return grads
        theta0 = state.extra["plastic"]["theta0"]
        return jax.tree.map(lambda g, p, p0, w: jnp.where(w, g + 2 * self.config.l2 * (p - p0),
                                                          g),
                            grads, state.params, theta0, self._weights(state.params))

    def after(self, new: TrainState, h: Any, ok: jax.Array) -> TrainState:
        """Continual backpropagation's utility, ages and replacements after an update
        (`ok`: the update was applied)."""
        if self.method != "cbp":
            return new
        c = self.config
        us = units(self.model, new.params)
        plastic = new.extra["plastic"]
        key = jax.random.fold_in(step_key(new), STREAM_PLASTICITY)
        a = mean_abs_h(h)
        w = outgoing_abs_sums(self.model, new.params)
        utils, ages, replace = [], [], []
        for l, u in enumerate(us):
            util = c.decay_rate * plastic["util"][l] + (1 - c.decay_rate) * unit_sums(
                a[l] * w[l], u)
            age = plastic["age"][l] + 1
            eligible = age > c.maturity
            expected = c.replacement_rate * jnp.sum(eligible)
            coin = jax.random.uniform(jax.random.fold_in(key, l))
            n = jnp.floor(expected) + (coin < expected - jnp.floor(expected))
            corrected = util / (1 - c.decay_rate ** age.astype(jnp.float32))
            order = jnp.argsort(jnp.where(eligible, corrected, jnp.inf))
            rank = jnp.zeros((u,), jnp.int32).at[order].set(jnp.arange(u, dtype=jnp.int32))
            r = eligible & (rank < n) & ok
            replace.append(r)
            utils.append(jnp.where(ok, jnp.where(r, 0.0, util), plastic["util"][l]))
            ages.append(jnp.where(ok, jnp.where(r, 0, age), plastic["age"][l]))
        new = new.replace(extra={**new.extra, "plastic": {"util": utils, "age": ages}})
        fkey = jax.random.fold_in(key, len(us))
        due = any_member(jnp.any(jnp.stack([jnp.any(r) for r in replace])))
        return jax.lax.cond(due,
                            lambda st: self._replace(st, replace, fkey), lambda st: st, new)


def of(config: PlasticityConfig, model: Model, x0: Any, task_length: int = 0,
       steps: int = 2**31 - 1) -> Intervention:
    """The intervention of `config` for `model` (inputs shaped like x0 [1, ...]) in a run of
    `steps` steps."""
    return Intervention(config, model, x0, task_length, steps)
