"""Gaussian expectations of an activation, as actlab.theory computes them.

_Phi holds phi and phi' as float64 numpy functions (from jax.jvp, or central differences
for a numpy-only phi) with the points where phi, phi' or phi'' jumps, found numerically.
_moments gives the one-variable expectations E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2] and
E[z phi phi'] / sqrt(q); _kernel2 the two-variable E[phi(u1) phi(u2)] (and E[phi' phi'])
for jointly normal u1, u2 of any variances and correlation. Both are composite
Gauss-Legendre sums split at the kinks: over z for one variable, in polar coordinates for
two, so kinked functions (relu, selu, hard_tanh) are integrated as accurately as smooth
ones. Everything is vectorised over q (and c). These are internals of actlab.theory, whose
functions take an activation by name, Spec or callable.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_Z_EDGES = np.linspace(-10.0, 10.0, 41)  # one-variable rule: |z| <= 10, tail mass ~ 1e-23
_X_EDGES = np.array([-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0])  # phi's own scale, for big q
_R_EDGES = np.arange(0.0, 10.0)  # radial panels of the two-variable rule, r <= 9
_TH_EDGES = np.arange(9) * np.pi / 4
_Q_FLOOR = 1e-24  # q = 0 (as q* = 0) is evaluated as this (the q -> 0+ limit)


class _Phi:
    """phi and phi' as float64 numpy functions, with the points where phi is not smooth."""

    def __init__(self, fn: Callable, name: str):
        self.name = name
        with jax.enable_x64(True):
            self._fd: Callable[[Any], tuple[Any, Any]] = jax.jit(
                lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),)))
            try:
                self._fd(jnp.zeros(4))
            except (TypeError, jax.errors.JAXTypeError):  # numpy-only phi: central differences
                f = lambda x: np.asarray(fn(np.asarray(x)), np.float64)  # noqa: E731
                self._fd = lambda x: (f(x), (f(x + (h := 1e-5 * (1 + abs(x)))) - f(x - h)) / h / 2)
        self.kinks = _find_kinks(self.fd)

    def fd(self, x) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float64)
        n = x.size  # padded to 2^12 or to chunks of 2^16: two shapes to compile
        size = 1 << 12 if n <= 1 << 12 else 1 << 16
        buf = np.zeros(-(-n // size) * size)
        buf[:n] = x.ravel()
        with jax.enable_x64(True):
            outs = [self._fd(chunk) for chunk in buf.reshape(-1, size)]
        return cast(tuple[np.ndarray, np.ndarray], tuple(  # (phi, phi')
            np.concatenate([o[i] for o in outs])[:n].reshape(x.shape) for i in (0, 1)))


def _find_kinks(fd: Callable) -> np.ndarray:
    """Points where phi, phi' or phi'' jumps: outlying second differences, refined by zooming."""
    found, todo = [0.0], [(-50.0, 50.0, 6401)]
    while todo and len(found) < 33:
        a, b, n = todo.pop()
        x = np.linspace(a, b, n)
        d = np.abs(np.diff(np.stack(fd(x)), 2))
        nb = np.maximum(np.pad(d, ((0, 0), (3, 0)))[:, :-3], np.pad(d, ((0, 0), (0, 3)))[:, 3:])
        hit = np.flatnonzero(((d > 1e-10) & (d > 8 * nb)).any(0))
        if n < 6401 and hit.size == 0:
            found.append(0.5 * (a + b))  # the jump is inside [a, b], below resolution
        for grp in np.split(hit, np.flatnonzero(np.diff(hit) > 2) + 1) if hit.size else []:
            a2, b2 = x[max(grp[0] - 1, 0)], x[min(grp[-1] + 3, n - 1)]
            m = 0.5 * (a2 + b2)
            if b2 - a2 > 1e-8 * (1 + abs(m)):
                todo.append((a2, b2, 65))
            else:
                found.append(round(m, 6) if abs(round(m, 6) - m) < b2 - a2 else m)
    k = np.unique(np.round(found, 12))
    return k[np.argsort(np.abs(k), kind="stable")][:17]


def _panels(base: np.ndarray, cuts: np.ndarray, lo: float, hi: float):
    """Gauss-Legendre nodes and weights on base edges refined by cuts (last axis) in [lo, hi]."""
    cuts = np.clip(cuts, lo, hi)
    e = np.sort(np.concatenate([np.broadcast_to(base, cuts.shape[:-1] + base.shape), cuts], -1))
    a, h = e[..., :-1, None], 0.5 * np.diff(e)[..., None]
    shape = e.shape[:-1] + (-1,)
    return (a + h * (1 + _GL_X)).reshape(shape), (h * _GL_W).reshape(shape)


def _moments(phi: _Phi, q, deriv: bool = True):
    """E[phi^2], and with deriv E[phi'^2] and the slope E[z phi phi']/sqrt(q), at x = sqrt(q) z."""
    rq = np.sqrt(np.maximum(np.asarray(q, np.float64), _Q_FLOOR))[..., None]
    z, w = _panels(_Z_EDGES, np.concatenate([_X_EDGES, phi.kinks]) / rq, -10.0, 10.0)
    w = w * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    f, d = phi.fd(rq * z)
    if not deriv:
        return (w * f * f).sum(-1)
    return (w * f * f).sum(-1), (w * d * d).sum(-1), (w * z * f * d).sum(-1) / rq[..., 0]


def _kernel2(phi: _Phi, q1, q2, c, deriv: bool = False):
    """E[phi(u1) phi(u2)] (and E[phi' phi'] with deriv) for Var u = q1, q2 and correlation c."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
    s1, s2 = (np.sqrt(np.maximum(v, _Q_FLOOR))[..., None] for v in (q1, q2))
    c = np.clip(c, -1.0, 1.0)
    t0, s = np.arccos(c), np.sqrt(1.0 - c * c)
    # u1 = s1 r cos(t), u2 = s2 r cos(t - t0): split t where u2 is 0 (u1 is 0 at multiples of
    # pi/2, in _TH_EDGES), where a kink of u1 and one of u2 fall at the same radius, and near
    # the zeros where a kink's radius k / |u/r| sweeps through r = 1.5, 3, 6.
    ang = [t0 + np.pi / 2, t0 + 3 * np.pi / 2]
    knz = phi.kinks[phi.kinks != 0]
    for k1 in knz:
        for k2 in knz:
            a = np.arctan2(k2 * s1[..., 0] - k1 * s2[..., 0] * c, k1 * s2[..., 0] * s)
            ang += [a, a + np.pi]
    for k, (sv, z0), r in itertools.product(np.unique(abs(knz)), ((s1, 0), (s2, t0)), (1.5, 3, 6)):
        d = np.arcsin(np.minimum(1.0, k / (sv[..., 0] * r)))
        ang += [z0 + h * np.pi / 2 + sg * d for h in (1, 3) for sg in (1, -1)]
    th, wth = _panels(_TH_EDGES, np.mod(np.stack(ang, -1), 2 * np.pi), 0.0, 2 * np.pi)
    x1, x2 = s1 * np.cos(th), s2 * np.cos(th - t0[..., None])  # u1 / r, u2 / r
    with np.errstate(divide="ignore"):  # radii of the kinks, and of |u| = 1, 3 for scale
        cuts = [k / x for k in knz for x in (x1, x2)] + [k / abs(x) for k in (1, 3)
                                                          for x in (x1, x2)]
    r, wr = _panels(_R_EDGES, np.stack(cuts, -1), 0.0, _R_EDGES[-1])
    wr = wr * r * np.exp(-0.5 * r * r) * wth[..., None] / (2 * np.pi)
    (f1, d1), (f2, d2) = phi.fd(x1[..., None] * r), phi.fd(x2[..., None] * r)
    k = (wr * f1 * f2).sum((-1, -2))
    return (k, (wr * d1 * d2).sum((-1, -2))) if deriv else k
