"""The elementwise nonlinearity a model applies to each layer's output, found in its traced
program (model=custom's sites that the user did not name).

The model is traced once (`jax.make_jaxpr`, nothing computed) with every layer's output
marked. From each mark, the program is followed forward through elementwise operations
(primitive by primitive, and through named calls such as `jax.nn.relu`'s jit whose bodies
are elementwise) whose other operands are constants; the chain must end in exactly one
value, h = f(z), that the rest of the model uses in place of z (z itself feeds nothing
else). Such a chain is a function of z alone,
however the model spelled it (`nn.gelu(x)`, `jax.nn.relu(x)`, `jnp.tanh(x)`, an ACT2FN
partial, an attribute, a Sequential element: all trace to the same operations). f is then
checked to be elementwise and not affine (a scaling is no nonlinearity) by evaluating
it, and compared on a grid with every registered
fixed activation: a match gives the registry's function and metadata; otherwise f itself
becomes the site, registered as `traced_<hash>` with a generic flatness test (dead: phi'
exactly 0 on a half-line; saturated: outside the interval where |phi'| reaches 1% of its
maximum).

Not found (the site is then the identity unless named): a layer whose output passes
through a normalisation, dropout in training mode, a residual sum or a reshape before the
nonlinearity, gated units (two projections), and layers inside lifted transforms
(`nn.scan`, `nn.remat`) whose bodies are separate programs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from actlab import activations
from actlab.activations import Spec

# marks layer `index`'s output in the traced program (never compiled or evaluated)
mark_p = jcore.Primitive("actlab_layer_output")
mark_p.def_impl(lambda x, *, index: x)
mark_p.def_abstract_eval(lambda aval, *, index: aval)

ELEMENTWISE = frozenset("""
abs acos acosh add asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type copy cos
cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt integer_pow is_finite le lgamma
log log1p logistic lt max min mul ne neg nextafter not and or pow rem round rsqrt select_n sign
sin sinh sqrt square sub tan tanh
""".split())
CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                   "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint"})
GRID = np.linspace(-8.0, 8.0, 257, dtype=np.float32)


def _elementwise(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name in ELEMENTWISE:
        return True
    if name not in CALLS:
        return False
    subs = list(jcore.jaxprs_in_params(eqn.params))
    return bool(subs) and all(_elementwise(e) for j in subs for e in j.eqns)


def _is_var(v: Any) -> bool:
    return not isinstance(v, jcore.Literal)


def chains(closed: Any) -> dict[int, tuple[Callable[[jax.Array], jax.Array], Any]]:
    """Mark index -> (f, z's abstract value): f the function of z alone (of the traced
    shape) that the program applies to the marked value z, for the marks where there is
    exactly one."""
    jaxpr = closed.jaxpr
    eqns = jaxpr.eqns
    values = dict(zip(jaxpr.constvars, closed.consts, strict=True))
    const = set(jaxpr.constvars)
    used_by: dict[Any, list[int]] = {}
    for i, e in enumerate(eqns):
        for v in filter(_is_var, e.invars):
            used_by.setdefault(v, []).append(i)
        if e.primitive is not mark_p and not e.effects and all(
                v in const for v in filter(_is_var, e.invars)):
            const.update(e.outvars)
    outs = set(filter(_is_var, jaxpr.outvars))
    found = {}
    for i, e in enumerate(eqns):
        if e.primitive is not mark_p:
            continue
        z = e.outvars[0]
        derived, chain = {z}, set()
        for j in range(i + 1, len(eqns)):
            e2 = eqns[j]
            ins = list(filter(_is_var, e2.invars))
            if (any(v in derived for v in ins) and all(v in derived or v in const for v in ins)
                    and all(o.aval.shape == z.aval.shape for o in e2.outvars)
                    and _elementwise(e2)):
                derived.update(e2.outvars)
                chain.add(j)
        ends = [v for v in derived - {z}
                if v in outs or any(k not in chain for k in used_by.get(v, ()))]
        # h replaces z: z itself feeds nothing but the chain (not a residual, not a norm)
        alone = z not in outs and all(k in chain for k in used_by.get(z, ()))
        if alone and len(ends) == 1:
            found[e.params["index"]] = (_function(eqns, chain, z, ends[0], const, values),
                                        z.aval)
    return found


def _function(eqns, chain, z, h, const, values) -> Callable[[jax.Array], jax.Array]:
    """z [traced shape] -> h, by the eqns that h needs (the chain and its constants)."""
    need, keep = {h}, []
    for j in range(len(eqns) - 1, -1, -1):
        e = eqns[j]
        if (j in chain or set(e.outvars) <= const) and need & set(e.outvars):
            keep.append(e)
            need.update(v for v in filter(_is_var, e.invars) if v is not z)
    keep.reverse()

    def run(zv: jax.Array) -> jax.Array:
        env = {**values, z: zv}
        for e in keep:
            args = [v.val if not _is_var(v) else env[v] for v in e.invars]
            params = e.primitive.get_bind_params(e.params)  # (subfuns, params) before jax 0.5
            subfuns, params = params if isinstance(params, tuple) else ((), params)
            out = e.primitive.bind(*subfuns, *args, **params)
            env.update(zip(e.outvars, out if e.primitive.multiple_results else [out],
                           strict=True))
        return env[h]

    return run


def elementwise(run: Callable[[jax.Array], jax.Array], shape: tuple[int, ...], dtype: Any
                ) -> Callable[[jax.Array], jax.Array] | None:
    """f on arrays of any shape (in blocks of the traced shape), if f is elementwise: the
    same function of each entry everywhere, checked on random and constant inputs."""
    size = int(np.prod(shape))

    def f(z: jax.Array) -> jax.Array:
        flat = jnp.asarray(z, dtype).reshape(-1)
        n = flat.size
        blocks = jnp.pad(flat, (0, (-n) % size)).reshape(-1, *shape)
        return jax.vmap(run)(blocks).reshape(-1)[:n].reshape(jnp.shape(z)).astype(z.dtype)

    rng = np.random.default_rng(0)
    z = (3 * rng.standard_normal(shape)).astype(np.float32)
    h = np.asarray(run(jnp.asarray(z, dtype)), np.float64).reshape(-1)
    idx = rng.choice(size, min(size, 64), replace=False)
    filled = np.asarray(jax.vmap(lambda v: run(jnp.full(shape, v, dtype)))(
        jnp.asarray(z.reshape(-1)[idx], dtype)), np.float64).reshape(len(idx), -1)
    if not (np.allclose(filled, filled[:, :1], rtol=1e-6, atol=1e-7, equal_nan=True)
            and np.allclose(filled[:, 0], h[idx], rtol=1e-6, atol=1e-7, equal_nan=True)):
        return None
    return f


def affine(f: Callable[[jax.Array], jax.Array]) -> bool:
    """Whether f is a t + b on the grid (a scaling such as attention's 1/sqrt(d), a shift):
    no nonlinearity, so no site."""
    t = np.asarray(GRID, np.float64)
    v = np.asarray(f(jnp.asarray(GRID)), np.float64)
    a, b = np.polyfit(t, v, 1) if np.all(np.isfinite(v)) else (np.nan, np.nan)
    return bool(np.all(np.isfinite(v)) and np.allclose(v, a * t + b, rtol=1e-5,
                                                       atol=1e-6 * (1 + abs(b))))


def candidates() -> list[Spec]:
    """The registered fixed elementwise activations (and gelu's tanh form)."""
    out = [activations.spec("gelu", approximate=True)]
    for name in activations.names(include_output=False):
        sp = activations.spec(name)
        if not (sp.gated or sp.doubled or sp.learned):
            out.append(sp)
    return out


def identify(f: Callable[[jax.Array], jax.Array], specs: Sequence[Spec]) -> Spec:
    """The registered activation equal to f on a grid (float32 rounding apart), else f
    itself registered under traced_<hash of its values> with a generic flatness test."""
    t = jnp.asarray(GRID)
    got = np.asarray(f(t), np.float64)
    for sp in specs:
        want = np.asarray(sp(t), np.float64)
        if np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True):
            return sp
    name = "traced_" + hashlib.sha1(np.round(got, 5).tobytes()).hexdigest()[:8]
    if name not in activations.names():
        wide = jnp.linspace(-40.0, 40.0, 16001, dtype=jnp.float32)
        d = np.abs(np.asarray(jax.jvp(f, (wide,), (jnp.ones_like(wide),))[1], np.float64))
        flat_left, flat_right = bool(np.all(d[:4000] == 0)), bool(np.all(d[-4000:] == 0))
        on = np.flatnonzero(d >= 0.01 * np.nanmax(d))
        w = np.asarray(wide)
        lo = float(w[on[0]]) if on.size and on[0] > 0 and not flat_left else -np.inf
        hi = float(w[on[-1]]) if on.size and on[-1] < d.size - 1 and not flat_right else np.inf
        activations.register(
            name, can_die=flat_left or flat_right,
            saturation=None if (lo, hi) == (-np.inf, np.inf) else (lo, hi),
            description="an elementwise function found in a model's traced program")(
            lambda z, _f=f: _f(z))
    return activations.spec(name)


def found(closed: Any) -> dict[int, Spec]:
    """Mark index -> the activation the marked value goes through (see the module
    docstring)."""
    out, specs = {}, None
    for l, (run, aval) in chains(closed).items():
        f = elementwise(run, tuple(aval.shape), aval.dtype)
        if f is None or affine(f):
            continue
        specs = specs if specs is not None else candidates()
        out[l] = identify(f, specs)
    return out
