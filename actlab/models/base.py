"""The model protocol every model is built behind, and the helpers models share.

Every model is built by `build(name, specs=..., num_classes=..., input_shape=..., **params)`
and exposes to the engine:

- `init(key, x) -> (params, state)`; state holds non-parameter collections (batch_stats)
- `apply(params, state, x, eps, capture, train, rng) -> (logits, aux, new_state)`:
  `eps` is a zero perturbation added to every pre-activation z_l, so one backward
  pass yields d loss / d z_l; with `capture`, aux holds per-layer z, h = phi(z)
  and phi'(z) (twice as wide for a doubled unit), either stacked [L, B, W] (the scanned
  MLP) or as lists of [B, ..., C] arrays (conv nets: the last axis is the unit/channel axis).
- `labels(params)`: a tree of `Role`s saying which parameters belong to which
  layer, which are activation parameters and which form the output layer; the
  engine's per-layer norms, optimizer masks and vmapped axes read it, never names.

A "layer" is an activation site: layer l's weights are those producing z_l.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab.activations import Spec
from actlab.config import validate
from actlab.errors import UserError

PyTree = Any  # a JAX pytree: parameters, model or optimizer state, gradients, captures


class ModelError(UserError):
    """A bad model name, parameter or model/dataset combination (one line)."""


@dataclasses.dataclass(frozen=True)
class Role:
    """What one parameter array is to the engine (a leaf of a model's label tree).

    group: "layer" (weights producing z_layer), "out" (the output layer), "act" (a
    learned activation parameter of layer `layer`, or of every layer when stacked), "norm"
    (a layer's normalisation parameters) or "other" (embeddings, norms outside a layer,
    ...). stacked: the leading axis runs over layers layer, layer + 1, ... kernel: a
    weight matrix or filter (not a bias or normalisation parameter). param: the name a
    learned scalar is logged under (an activation parameter; DyT's dyt_alpha).
    """

    group: str
    layer: int | None = None
    stacked: bool = False
    kernel: bool = False
    param: str | None = None


def _roles(tree) -> list:
    return jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, Role))


@dataclasses.dataclass(frozen=True)
class Model:
    """A built model plus what the engine needs to know of its parameters."""

    module: nn.Module
    specs: tuple[Spec, ...]
    labels: Callable[[Mapping[str, Any]], Any]  # params -> tree of Role, same structure
    # compute dtype (train.dtype): parameters, inputs and state are cast to it for the
    # forward pass, which returns float32 logits and captures; None: as stored (float32)
    dtype: Any = None
    # precision of its float32 matmuls and convolutions (train.matmul_precision); None: JAX's
    # default
    precision: str | None = None
    # the width parametrization's learning-rate factors (actlab.models.param): optimizer name
    # -> (factor per kind of parameter, Role -> kind); None: every factor 1 (sp)
    lr_factor: Callable[[str], tuple[Mapping[str, float], Callable[[Role], str]]] | None = None
    # each hidden layer's name (model=custom: its module path); None: layer l is "l"
    layer_names: tuple[str, ...] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.specs)

    def _cast(self, tree, dtype):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating)
                            else a, tree)

    def init(self, key: jax.Array, x: jax.Array) -> tuple[Any, dict]:
        variables = self.module.init({"params": key, "dropout": key}, x)
        params = variables.pop("params")
        return params, dict(variables)

    def apply(self, params, state, x, eps=None, capture: bool = False, train: bool = False,
              rng=None):
        if self.precision is None:
            return self._apply(params, state, x, eps, capture, train, rng)
        with jax.default_matmul_precision(self.precision):  # read when traced
            return self._apply(params, state, x, eps, capture, train, rng)

    def _apply(self, params, state, x, eps, capture, train, rng):
        stored = state
        if self.dtype is not None:  # mixed precision: float32 masters, low-precision compute
            params, state, x, eps = self._cast((params, state, x, eps), self.dtype)
        variables = {"params": params, **(state or {})}
        rngs = {"dropout": rng} if rng is not None else {}
        if train and state:
            (logits, aux), new = self.module.apply(variables, x, eps, capture, train, rngs=rngs,
                                                   mutable=list(state))
            new = dict(new)
        else:
            logits, aux = self.module.apply(variables, x, eps, capture, train, rngs=rngs)
            new = stored
        if self.dtype is not None:
            logits, aux = self._cast((logits, aux), jnp.float32)
            new = jax.tree.map(lambda n, o: n.astype(o.dtype), new, stored)
        return logits, aux, new

    def mask(self, params, pred: Callable[[Role], bool]):
        """A tree of bools, True where `pred(role)` (for optax.masked and selective updates)."""
        return jax.tree.map(pred, self.labels(params), is_leaf=lambda x: isinstance(x, Role))

    def layer_sqnorms(self, tree: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
        """Squared L2 norm of each layer's weights ([L]) and of the output layer's.

        `tree` has the structure of the parameters (parameters, gradients, updates).
        """
        per: list[list[jax.Array]] = [[] for _ in range(self.num_layers)]
        out: list[jax.Array] = []
        roles = _roles(self.labels(tree))
        for role, x in zip(roles, jax.tree.leaves(tree), strict=True):
            if role.group == "out":
                out.append(jnp.sum(jnp.square(x)))
            elif role.group == "layer" and role.stacked:
                rows = jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)))
                for i in range(x.shape[0]):
                    per[role.layer + i].append(rows[i])
            elif role.group == "layer":
                per[role.layer].append(jnp.sum(jnp.square(x)))
        return jnp.stack([sum(p) for p in per]), cast(jax.Array, sum(out))  # out: one layer

    def kernel_abs_means(self, params: Mapping[str, Any]) -> jax.Array:
        """Mean |w| over each layer's kernels ([L]; biases and norms left out)."""
        sums: list[list[jax.Array]] = [[] for _ in range(self.num_layers)]
        counts = [0] * self.num_layers
        roles = _roles(self.labels(params))
        for role, x in zip(roles, jax.tree.leaves(params), strict=True):
            if role.group != "layer" or not role.kernel or role.layer is None:
                continue
            rows = x if role.stacked else x[None]
            per_row = jnp.sum(jnp.abs(rows), axis=tuple(range(1, rows.ndim)))
            for i in range(rows.shape[0]):
                sums[role.layer + i].append(per_row[i])
                counts[role.layer + i] += rows[i].size
        return jnp.stack([sum(s_) / max(c, 1) for s_, c in zip(sums, counts, strict=True)])

    def activation_params(self, params: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Learned activation parameters, e.g. prelu_alpha -> [L] or prelu_alpha/3 -> scalar."""
        out: dict[str, jax.Array] = {}
        for role, v in zip(_roles(self.labels(params)), jax.tree.leaves(params), strict=True):
            if role.param is None:
                continue
            if role.group != "act":  # a learned scalar of a layer's normalisation (DyT alpha)
                key = role.param if role.stacked else f"{role.param}/{role.layer}"
                out[key if role.layer is not None else f"{role.param}/final"] = v
            elif role.stacked:  # one value per layer, every layer the same function
                out[f"{self.specs[role.layer].name}_{role.param}"] = v
            else:
                out[f"{self.specs[role.layer].name}_{role.param}/{role.layer}"] = jnp.mean(v)
        return out


def act_site(module: nn.Module, l: int, spec: Spec, z: jax.Array, eps, capture: bool,
             aux: dict[str, list]) -> jax.Array:
    """Apply layer l's activation inside a compact module: eps, learned params, capture.

    A gated spec takes the fused pre-activation z = [z_g, z_v]; a doubled spec (crelu)
    returns twice z's channels (see `unit`).
    """
    learned = {p: module.param(f"act{l}_{p}", nn.initializers.constant(v), ())
               for p, v in spec.learned.items()}
    h, captured = unit(spec, z, None if eps is None else eps[l], learned, capture)
    for k, v in (captured or {}).items():
        aux.setdefault(k, []).append(v)
    return h


def unit(spec: Spec, z: jax.Array, e: jax.Array | None, learned: Mapping[str, jax.Array],
         capture: bool) -> tuple[jax.Array, dict[str, jax.Array] | None]:
    """A layer's units on pre-activation z: h and, with `capture`, what the metrics read.

    Elementwise: h = phi(z + e); captured z, h and phi'(z). Doubled (crelu): the unit's
    pre-activations are zz = [z, -z] side by side on the last axis, twice z's width, and
    h = phi(zz + e), so eps (then e has zz's width), delta_norm, dead_frac and sat_frac act
    on the doubled pre-activations; captured z = zz, h and phi'(zz). Gated (GLU family): z
    holds the gate and value pre-activations side by side on its last axis, z = [z_g, z_v], and
    h = gate(z_g + e) * z_v; captured z = z_g (the site of eps, sat_frac and delta_norm),
    h, phi' = gate'(z_g), `gate` = gate(z_g), and `flow` = max(|dh/dz_g|, |dh/dz_v|) per
    unit and example, which is 0 exactly when the unit's output and both input gradients
    vanish (dead).
    """
    if not spec.gated:
        if spec.doubled:
            z = jnp.concatenate([z, -z], -1)
        if e is not None:
            z = z + e
        h = spec(z, **learned)
        return h, ({"z": z, "h": h, "dphi": spec.derivative(z, **learned)} if capture else None)
    u = z.shape[-1] // 2
    zg, zv = z[..., :u], z[..., u:]
    if e is not None:
        zg = zg + e
    h = spec.glu(zg, zv, **learned)
    if not capture:
        return h, None
    ones = jnp.ones_like(zg)
    dh_dg = jax.jvp(lambda g: spec.glu(g, zv, **learned), (zg,), (ones,))[1]
    dh_dv = jax.jvp(lambda v: spec.glu(zg, v, **learned), (zv,), (ones,))[1]
    gate = spec.gate
    return h, {"z": zg, "h": h, "dphi": gate.derivative(zg, **learned),
               "gate": gate(zg, **learned),
               "flow": jnp.maximum(jnp.abs(dh_dg), jnp.abs(dh_dv))}


def new_aux() -> dict[str, list]:
    return {}


def _one_kind(specs: tuple[Spec, ...], kind: str, message: str) -> bool:
    """Whether every layer's unit has the property `kind` (gated, doubled): all or none."""
    kinds = {getattr(sp, kind) for sp in specs}
    if len(kinds) > 1:
        raise ModelError(message)
    return kinds.pop()


def is_gated(specs: tuple[Spec, ...]) -> bool:
    """Whether the layers use a gated unit (GLU family); every layer or none."""
    return _one_kind(specs, "gated", "model.activations mixes gated units (GLU family) and "
                     "elementwise activations; use one kind in all layers")


def is_doubled(specs: tuple[Spec, ...]) -> bool:
    """Whether the layers use a doubled unit (crelu: phi on [z, -z]); every layer or none."""
    return _one_kind(specs, "doubled", "model.activations mixes doubled units (crelu), whose "
                     "layers are twice as wide, and other activations; use one kind in all "
                     "layers")


def paired(init: Callable) -> Callable:
    """Initializer of a fused [..., fan_in, 2U] gate-and-value kernel: each U-wide half drawn
    as a kernel of its own (fans as for a U-wide layer)."""

    def init2(key, shape, dtype=jnp.float32):
        k_gate, k_value = jax.random.split(key)
        half = (*shape[:-1], shape[-1] // 2)
        return jnp.concatenate([init(k_gate, half, dtype), init(k_value, half, dtype)], -1)

    return init2


def matched_units(count: Callable[[int], int], target: int, hi: int) -> int:
    """The width U in 1..hi whose parameter count `count(U)` is closest to `target`
    (`model.glu_width=match`: a gated or doubled model as large as the elementwise one)."""
    return min(range(1, hi + 1), key=lambda u: (abs(count(u) - target), u))


GLU_WIDTHS = ("match", "same")
GATED_MODELS = ("mlp", "transformer", "gpt")  # the models whose layers can be gated units
DOUBLED_MODELS = ("mlp", "cnn")  # the models whose layers can be doubled units (crelu)


class DyT(nn.Module):
    """Dynamic Tanh (Zhu et al. 2025), in place of a normalisation layer:
    gamma * tanh(alpha x) + beta, a learned scalar alpha (initial `alpha0`) and per-channel
    gamma (ones) and beta (zeros) over the last axis."""

    alpha0: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("dyt_alpha", nn.initializers.constant(self.alpha0), ())
        gamma = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        beta = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return gamma * jnp.tanh(alpha * x) + beta


def prefix_labels(num_layers: int) -> Callable[[Mapping[str, Any]], Any]:
    """Labels of a model whose modules are named by layer: 'layer<l>' and 'layer<l>_*' hold
    layer l's weights, 'out' the output layer, 'act<l>_<p>' layer l's activation parameter p
    (as `act_site` creates them); anything else is "other"."""
    sites = {f"layer{l}": l for l in range(num_layers)}
    # a block's DyT scalars: 'layer<l>_ln2' (before the MLP) logs as dyt_alpha/l,
    # 'layer<l>_ln1' (before attention) as dyt_alpha_attn/l, a final one as dyt_alpha/final
    dyt_names = {"ln2": "dyt_alpha", "ln1": "dyt_alpha_attn"}

    def module_role(name: str) -> Role:
        if name == "out":
            return Role("out")
        head, _, rest = name.partition("_")
        if head in sites:
            return Role("layer", sites[head])
        if head.startswith("act") and head[3:].isdigit():
            return Role("act", int(head[3:]), param=rest)
        return Role("other")

    def labels(tree):
        def leaf(path, _):
            module = str(path[0].key)
            role = module_role(module)
            keys = [getattr(k, "key", None) for k in path[1:]]
            if keys and keys[-1] == "dyt_alpha":  # DyT in place of a norm: named by its site
                return dataclasses.replace(role, param=dyt_names.get(module.rpartition("_")[2],
                                                                     "dyt_alpha"))
            return dataclasses.replace(role, kernel=True) if "kernel" in keys else role

        return jax.tree_util.tree_map_with_path(leaf, dict(tree))

    return labels


def positive_int(key: str, v: Any, lo: int = 1) -> int:
    """Validate an integer model parameter (one-line ModelError otherwise)."""
    if isinstance(v, float):  # config integers are ints; 2.0 is not a depth
        raise ModelError(f"model.{key} must be an integer, got {v!r}")
    return validate.as_int(f"model.{key}", v, lo, error=ModelError)


def fraction(key: str, v: Any) -> float:
    """Validate a rate in [0, 1)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise ModelError(f"model.{key} must be in [0, 1), got {v!r}")
    return float(v)


def require_sequence_or_image(name: str, input_shape: tuple[int, ...]) -> None:
    """Conv and attention models need [T, C] or [H, W, C] inputs (or a long flat vector)."""
    if len(input_shape) < 2 and (len(input_shape) != 1 or input_shape[0] < 8):
        raise ModelError(f"model '{name}' needs sequence or image inputs; this dataset's "
                         f"inputs have shape {tuple(input_shape)} (use model=mlp)")


def choice(key: str, v: Any, options: tuple[str, ...]) -> str:
    """Validate a named model option (one-line ModelError listing the options)."""
    return validate.choice(f"model.{key}", v, options, error=ModelError)
