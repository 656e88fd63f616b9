"""An nnx module inside actlab's linen engine, its layers tapped like linen ones.

`FromNnx(make)` is a linen module around `make(key) -> nnx.Module`: its parameters
(`nnx.Param` variables) are the linen parameter `nnx_params` (the nnx state as a nested
dict, keys as strings), every other nnx variable (BatchNorm statistics, dropout's rng
counts) the collection `nnx_state`, updated where the engine makes it mutable. Each call
merges them into a fresh nnx module, switches it to `train()` or `eval()`, and gives each
submodule that owns a `kernel` or `embedding` a subclass whose `__call__` passes its output
to actlab.models.taps (nnx has no method interception; the class is that of the one call's
merged copy only, so the caller's module is never changed).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

from actlab.models import taps

PARAMS, STATE = "nnx_params", "nnx_state"


def is_nnx(module: Any) -> bool:
    return isinstance(module, nnx.Module)


def _owns_kernel(node: Any) -> bool:
    return any(isinstance(getattr(node, k, None), nnx.Param) for k in taps.KERNELS)


@functools.cache
def _tapped(cls: type) -> type:
    def __call__(self, *args, **kwargs):
        return taps.tap(self.__dict__["_actlab_path"], cls.__call__(self, *args, **kwargs))

    return type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})


def _pure(state: Any) -> Any:
    """An nnx State as a nested dict of arrays."""
    return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


def _str_keys(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def _keys_like(tree: Any, like: Any) -> Any:
    """`tree` (string keys) with the keys of `like` (an nnx pure dict: ints for lists)."""
    if isinstance(like, Mapping):
        return {k: _keys_like(tree[str(k)], v) for k, v in like.items()}
    return tree


@functools.cache
def _templates(make: Callable[[jax.Array], Any]) -> tuple[Any, Any, Any]:
    """The module's graph and abstract states (parameters, the rest), traced once."""
    abstract = nnx.eval_shape(lambda: make(jax.random.PRNGKey(0)))
    return _split(abstract)


def _split(module: Any) -> tuple[Any, Any, Any]:
    """(graph, parameters, every other variable)."""
    graph, params, rest = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]
    return graph, params, rest


def _filled(template: Any, pure: Any) -> Any:
    state = jax.tree.map(lambda a: a, template)
    nnx.replace_by_pure_dict(state, _keys_like(pure, _pure(template)))
    return state


class FromNnx(nn.Module):
    """`make(key)`'s nnx module as a linen module x -> its output (module docstring)."""

    make: Callable[[jax.Array], Any]

    @nn.compact
    def __call__(self, x, train: bool = False, **flags):
        graph, p_tmpl, r_tmpl = _templates(self.make)
        first: list[Any] = []

        def fresh(key):
            if not first:
                first.append(self.make(key))
            return first[0]

        params = self.param(PARAMS, lambda key: _str_keys(
            _pure(nnx.state(fresh(key), nnx.Param))))
        has_rest = bool(jax.tree.leaves(r_tmpl))
        rest = self.variable(STATE, STATE, lambda: _str_keys(_pure(_split(
            fresh(self.make_rng("params")))[2]))) if has_rest else None
        module = nnx.merge(graph, _filled(p_tmpl, params),
                           _filled(r_tmpl, rest.value) if rest is not None else r_tmpl)
        module.train() if train else module.eval()
        for path, node in nnx.iter_graph(module):
            if isinstance(node, nnx.Module) and _owns_kernel(node):
                node.__dict__["_actlab_path"] = tuple(map(str, path))
                node.__class__ = _tapped(type(node))
        out = module(x, **flags)
        if rest is not None and self.is_mutable_collection(STATE):
            rest.value = _str_keys(_pure(_split(module)[2]))
        return out


def takes_rngs(fn: Callable[..., Any]) -> bool:
    """Whether `fn` has an `rngs` parameter (an nnx factory that draws its weights)."""
    try:
        return "rngs" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def from_factory(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FromNnx:
    """`fn(*args, rngs=nnx.Rngs(key), **kwargs)` per key (per seed) as a linen module."""
    return FromNnx(make=lambda key: fn(*args, rngs=nnx.Rngs(key), **kwargs))


def from_instance(module: Any) -> Callable[[jax.Array], Any]:
    """make(key) for a built nnx module: every key gives its own weights (a factory that
    takes `rngs` draws them per seed instead)."""
    graph, state = nnx.split(module)
    return lambda key: nnx.merge(graph, state)
