"""Where a layer's output passes by: one hook shared by linen and nnx modules.

A watcher installs `tapping(fn)` around a model's call; every kernel-owning layer's output
goes through `tap(path, out)`, which hands it to `fn(path, out)` and continues with what
`fn` returns (the output itself, perturbed by eps, or marked for the trace). Linen
submodules reach it through `nn.intercept_methods` (`linen_layers`), nnx ones through the
class that actlab.models.nnx_bridge gives them for the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax

KERNELS = ("kernel", "embedding")  # a module owning one of these parameters is a layer
INNER = "inner"  # the factory's module inside the wrapper
Tap = Callable[[tuple[str, ...], Any], Any]
_ACTIVE: list[Tap] = []


@contextlib.contextmanager
def tapping(fn: Tap) -> Iterator[None]:
    """Route every layer output of the calls inside to `fn(path, out) -> out` (nested:
    the innermost watcher's first, then the outer ones on what it returned)."""
    outermost = not _ACTIVE
    _ACTIVE.append(fn)
    try:
        with nn.intercept_methods(_linen) if outermost else contextlib.nullcontext():
            yield
    finally:
        _ACTIVE.pop()


def tap(path: tuple[str, ...], out: Any) -> Any:
    """A layer at `path` returned `out`: what the active watchers make of it."""
    if not isinstance(out, jax.Array):
        return out
    for fn in reversed(_ACTIVE):
        out = fn(path, out)
    return out


def owns_kernel(module: nn.Module) -> bool:
    return any(module.has_variable("params", k) for k in KERNELS)


def path_of(module: nn.Module) -> tuple[str, ...]:
    """A linen module's path below the factory's module (the wrapper's `inner` left out)."""
    path = tuple(module.path)
    return path[1:] if path[:1] == (INNER,) else path


def _linen(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    mod = context.module
    if context.method_name != "__call__" or not mod.path or not owns_kernel(mod):
        return out
    return tap(path_of(mod), out)
