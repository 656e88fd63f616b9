"""model=custom: a Flax module (linen or nnx) that another project wrote, watched without
editing it.

    actlab-train model=custom model.target=pkg.module:factory '+model.kwargs={width: 128}'

`factory(input_shape, num_classes, **kwargs)` (input_shape without the batch axis) returns a
linen Module whose `apply(variables, x)` gives the logits [B, num_classes]; collections
other than `params` (batch_stats) are its state, updated while training. A factory with an
`rngs` parameter is an nnx one: called with `rngs=nnx.Rngs(key)` per seed, it returns an
nnx Module called as `module(x)` (actlab.models.nnx_bridge; `train()`/`eval()` switched
for training and measuring). A module that takes a train/deterministic flag names it in
`model.train_flag`: `train` is called with `train=True` while training and `False`
otherwise, `!deterministic` with `deterministic` set to the opposite.

Layers are discovered, not declared: every submodule that owns a kernel (a parameter named
`kernel` or `embedding` of its own: linen Dense, DenseGeneral, Conv, ConvTranspose,
Einsum, Embed, their nnx counterparts, and any module of another project written the same
way) is a layer when it is called, named by its module path below the factory's module,
numbered in the order of its first call. The last one called, whose output holds the
logits, is the output layer (`out`); the others are hidden layers 0..L-1, and their
parameters (kernel, bias) are layer l's for grad_norm, weight_norm, update_ratio and the
probes. Each hidden layer's output is its pre-activation z_l, captured and perturbed (eps,
for delta_norm) inside the compiled program (actlab.models.taps: linen's
`nn.intercept_methods`, a per-call subclass for nnx), so q, c, act_mean, act_std,
delta_norm are defined for any model.

A layer's nonlinearity is found in the traced program where the model applies an
elementwise function to the layer's output directly (actlab.models.sites), or named:
`model.sites` maps module-path patterns (fnmatch, e.g. `*/Dense_0` or `Block_*/MLP/fc1`) to
registered activations, and a name wins over what was found. dead_frac, sat_frac and
h = phi(z) come from that function. A layer with neither has the identity as its site
(dead and saturated fractions 0).
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab import activations
from actlab.activations import Spec
from actlab.models import nnx_bridge, taps
from actlab.models import sites as traced
from actlab.models.base import Model, ModelError, Role

KERNELS, INNER = taps.KERNELS, taps.INNER


def load_factory(target: str) -> Callable[..., Any]:
    """The callable named by 'package.module:factory' (one-line ModelError otherwise)."""
    if not isinstance(target, str) or target.count(":") != 1:
        raise ModelError(f"model.target must be 'package.module:factory', got {target!r}")
    mod_name, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ModelError(f"model.target {target!r}: cannot import {mod_name!r} ({e})") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ModelError(f"model.target {target!r}: {mod_name!r} has no callable {attr!r}")
    return fn


class Watched(nn.Module):
    """The factory's module with every kernel-owning submodule's output captured.

    `layers`: the hidden layers' paths in call order (found by `discover`); the actlab
    model protocol's call: (x, eps, capture, train) -> (logits, aux with z per layer).
    """

    inner: nn.Module
    layers: tuple[tuple[str, ...], ...] = ()
    specs: tuple[Spec, ...] = ()  # each layer's site (h = phi(z), phi'(z) for the metrics)
    train_flag: str | None = None

    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        index = {p: l for l, p in enumerate(self.layers)}
        z: list[jax.Array | None] = [None] * len(self.layers)

        def capture_z(path, out):
            l = index.get(path)
            if l is None or z[l] is not None:  # the output layer, or a repeated call
                return out
            if eps is not None:
                out = out + eps[l]
            z[l] = out
            return out

        kwargs: dict[str, Any] = {"train": train} if isinstance(
            self.inner, nnx_bridge.FromNnx) else {}
        if self.train_flag:
            name = self.train_flag.lstrip("!")
            kwargs[name] = (not train) if self.train_flag.startswith("!") else train
        with taps.tapping(capture_z):
            logits = self.inner(x, **kwargs)
        if not isinstance(logits, jax.Array):
            raise ModelError(f"model=custom: the module returned {type(logits).__name__}, "
                             f"not an array of logits")
        if not capture:
            return logits, None
        zs = [jnp.asarray(a) for a in z]
        return logits, {"z": zs, "h": [sp(a) for sp, a in zip(self.specs, zs, strict=True)],
                        "dphi": [sp.derivative(a) for sp, a in zip(self.specs, zs, strict=True)]}


def discover(module: nn.Module, x: jax.Array, train_flag: str | None
             ) -> tuple[list[tuple[str, ...]], list[tuple[int, ...]], Any, dict[int, Spec]]:
    """Every kernel-owning submodule's path and output shape in call order, the logits'
    shape, and the nonlinearities found after the layers (actlab.models.sites), from an
    abstract initialisation and trace (nothing computed)."""
    found: dict[tuple[str, ...], tuple[int, ...]] = {}

    def record(path, out):
        found.setdefault(path, tuple(out.shape))
        return out

    wrapper = Watched(inner=module, train_flag=train_flag)

    def init(key):
        with taps.tapping(record):
            return wrapper.init({"params": key, "dropout": key}, x)

    try:
        variables = jax.eval_shape(init, jax.random.PRNGKey(0))
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001  (any failure of someone else's module: one line)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model=custom: the module fails on inputs of shape "
                         f"{tuple(x.shape)}: {type(e).__name__}: {first}") from None
    shapes = jax.eval_shape(lambda v: wrapper.apply(v, x), variables)[0].shape
    paths = list(found)
    return paths, list(found.values()), shapes, trace_sites(wrapper, variables, x, paths)


def trace_sites(wrapper: Watched, variables: Any, x: jax.Array,
                paths: list[tuple[str, ...]]) -> dict[int, Spec]:
    """Layer index -> the elementwise function the module applies to that layer's output,
    where its traced program shows one (actlab.models.sites; {} if it cannot be traced)."""
    index = {p: l for l, p in enumerate(paths)}
    marked: set[tuple[str, ...]] = set()

    def mark(path, out):
        if path not in index or path in marked:
            return out
        marked.add(path)
        return traced.mark_p.bind(out, index=index[path])

    def apply(v):
        with taps.tapping(mark):
            return wrapper.apply(v, x)[0]

    try:
        closed = jax.make_jaxpr(apply)(variables)
        return traced.found(closed)
    except Exception:  # noqa: BLE001  (an untraceable model keeps named sites only)
        return {}


def site_map(sites: Any) -> dict[str, str]:
    """model.sites as {pattern: activation}: a mapping, or a list of 'pattern=activation'
    strings (Hydra's command line takes `*` and `/` only in quoted strings, not in keys)."""
    if sites is None:
        return {}
    if isinstance(sites, Mapping):
        return {str(k): str(v) for k, v in sites.items()}
    if isinstance(sites, list | tuple) and all(isinstance(e, str) and "=" in e for e in sites):
        return dict(e.rsplit("=", 1) for e in sites)
    raise ModelError(f"model.sites must map patterns to activations ({{Dense_0: relu}}) or "
                     f"list 'pattern=activation' strings, got {sites!r}")


def site_specs(paths: list[tuple[str, ...]], sites: Mapping[str, str],
               found: Mapping[int, Spec] | None = None) -> tuple[Spec, ...]:
    """Each layer's site: the activation of the first pattern its path matches, else the
    one found in the traced program (`found`, by layer index), else the identity."""
    for pat, name in sites.items():
        activations.spec(name)  # unknown names: one line listing the known ones
        if not any(fnmatch.fnmatchcase("/".join(p), pat) for p in paths):
            raise ModelError(f"model.sites: pattern {pat!r} matches no layer; the layers are "
                             f"{', '.join('/'.join(p) for p in paths)}")
    out = []
    for l, p in enumerate(paths):
        named = next((n for pat, n in sites.items() if fnmatch.fnmatchcase("/".join(p), pat)),
                     None)
        if named is None:
            out.append((found or {}).get(l) or activations.spec("identity"))
            continue
        sp = activations.spec(named)
        if sp.gated or sp.doubled or sp.learned:
            raise ModelError(f"model.sites: {named} is not a fixed elementwise function of one "
                             f"layer's output; name one that is (relu, gelu, tanh, ...)")
        out.append(sp)
    return tuple(out)


def labels_for(layers: list[tuple[str, ...]], out: tuple[str, ...] | None
               ) -> Callable[[Mapping[str, Any]], Any]:
    """params -> Role tree: a leaf under layer l's module path is layer l's, under the output
    layer's the output's, anything else (norms, positions) 'other'."""
    index = {p: l for l, p in enumerate(layers)}

    def role(path: tuple[str, ...]) -> Role:
        names = path[1:] if path[:1] == (INNER,) else path
        names = names[1:] if names[:1] == (nnx_bridge.PARAMS,) else names
        owner, leaf = names[:-1], names[-1]
        kernel = leaf in KERNELS
        if owner in index:
            return Role("layer", index[owner], kernel=kernel)
        if owner == out:
            return Role("out", kernel=kernel)
        return Role("other", kernel=kernel)

    def labels(params: Mapping[str, Any]) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda kp, _: role(tuple(str(getattr(k, "key", k)) for k in kp)), params)

    return labels


def sites(target=None, kwargs=None, sites=None, train_flag=None) -> int:
    """Checks the settings; 0: the layers are discovered when the model is built."""
    load_factory(target)
    if not isinstance(kwargs or {}, Mapping):
        raise ModelError("model.kwargs must be a mapping of the factory's keyword arguments")
    site_map(sites)
    if train_flag is not None and not (isinstance(train_flag, str) and train_flag.lstrip("!")):
        raise ModelError(f"model.train_flag must be a keyword name (or !name), got "
                         f"{train_flag!r}")
    return 0


def build(*, specs, num_classes, input_shape, init, target=None, kwargs=None, sites=None,
          train_flag=None) -> Model:
    """The factory's module, its layers discovered (see the module docstring)."""
    del specs, init  # the module brings its own functions and initialisation
    factory = load_factory(target)
    args, kw = (tuple(input_shape), num_classes), dict(kwargs or {})
    module = (nnx_bridge.from_factory(factory, *args, **kw) if nnx_bridge.takes_rngs(factory)
              else factory(*args, **kw))
    if not isinstance(module, nn.Module) and not nnx_bridge.is_nnx(module):
        raise ModelError(f"model.target {target!r} returned {type(module).__name__}, not a "
                         f"flax.linen or nnx Module")
    return watched(module, input_shape, num_classes, sites, train_flag, f"model.target "
                   f"{target!r}")


def watched(module: Any, input_shape, num_classes: int,
            sites: Mapping[str, str] | list[str] | None = None, train_flag: str | None = None,
            name: str = "the module") -> Model:
    """A linen or nnx module as an actlab Model: its layers discovered on inputs
    [2, *input_shape], their sites found or from `sites` (see the module docstring). An nnx
    module instance starts every seed from its own weights; `rngs -> module` draws them."""
    if nnx_bridge.is_nnx(module):
        module = nnx_bridge.FromNnx(make=nnx_bridge.from_instance(module))
    elif not isinstance(module, nn.Module) and nnx_bridge.takes_rngs(module):
        module = nnx_bridge.from_factory(module)
    x = jnp.zeros((2, *input_shape), jnp.float32)
    paths, shapes, logits, found = discover(module, x, train_flag)
    if tuple(logits) != (2, num_classes):
        raise ModelError(f"{name}: its output for inputs [B, "
                         f"{', '.join(map(str, input_shape))}] is {list(logits)[1:]} per "
                         f"example; the dataset has {num_classes} classes")
    if not paths:
        raise ModelError(f"{name}: no submodule owns a kernel ({' or '.join(KERNELS)}); "
                         f"nothing to measure")
    out = paths[-1] if shapes[-1][-1] == num_classes else None
    hidden = paths[:-1] if out is not None else paths
    if not hidden:
        raise ModelError(f"{name}: its only layer is the output layer")
    specs_ = site_specs(hidden, site_map(sites), found)
    module_ = Watched(inner=module, layers=tuple(hidden), specs=specs_, train_flag=train_flag)
    return Model(module=module_, specs=specs_, labels=labels_for(hidden, out),
                 layer_names=tuple("/".join(p) for p in hidden))
