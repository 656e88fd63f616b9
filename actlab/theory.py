"""Mean-field signal propagation for any activation: fixed points, phases, depth scales.

A fully connected network at initialisation, weights N(0, sigma_w2/fan_in) and biases
N(0, sigma_b2), in the wide limit (Poole et al. 2016; Schoenholz et al. 2017):

    q_{l+1} = sigma_w2 E[phi(sqrt(q_l) z)^2] + sigma_b2                 length map, fixed point q*
    c_{l+1} = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*            correlation map, stable c*
    chi1    = sigma_w2 E[phi'(sqrt(q*) z)^2]          ordered < 1 < chaotic
    chi_c   = sigma_w2 E[phi'(u1) phi'(u2)] at c*     slope of the correlation map at c*
    xi_q    = -1 / ln(chi1 + sigma_w2 E[phi''(sqrt(q*) z) phi(sqrt(q*) z)]),   xi_c = -1 / ln chi_c

with z, z1, z2 independent standard normals, u1 = sqrt(q*) z1 and
u2 = sqrt(q*) (c z1 + sqrt(1 - c^2) z2). chi1 is also the factor by which the expected squared
norm of the backward signal changes per layer (Schoenholz et al. 2017; Pennington et al. 2017).

Expectations use composite Gauss-Legendre quadrature against the Gaussian density, split at
the kinks of phi (where phi, phi' or phi'' jumps, located numerically): over z for one
variable, in polar coordinates for two, where the lines u1 = 0 and u2 = 0 become angles.
Kinked functions (relu, selu, hard_tanh) are thus integrated as accurately as smooth ones.
phi and phi' come from the registry's Spec, or from a plain callable and jax.jvp, in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from actlab import activations

Act = str | activations.Spec | Callable[..., Any]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(12)
_Z = 10.0  # |z| cut-off of the one-variable rule (Gaussian tail mass ~ 1e-23)
_Z_EDGES = np.linspace(-_Z, _Z, 41)
_X_EDGES = np.array([-8.0, -4.0, -2.0, -1.0, 1.0, 2.0, 4.0, 8.0])  # phi's own scale, for big q
_R_EDGES = np.arange(0.0, 10.0)  # radial panels of the two-variable rule, r <= 9
_TH_EDGES = np.arange(8) * np.pi / 4
_Q_FLOOR = 1e-12  # q* = 0 is evaluated as this (the q -> 0+ limit)
_Q_GRID = 4.0 ** np.arange(-20, 28)  # where the length map is scanned, 1e-12 .. 2e16
_W_GRID = np.geomspace(1e-3, 1e5, 65)  # where chi1 = 1 is scanned for


class TheoryError(ValueError):
    """A mean-field quantity that does not exist for these settings (one-line message)."""


class _Phi:
    """phi and phi' as float64 numpy functions, with the points where phi is not smooth."""

    def __init__(self, fn: Callable, name: str):
        self.name = name
        with jax.enable_x64(True):
            f = jax.jit(fn)
            fd = jax.jit(lambda x: jax.jvp(fn, (x,), (jnp.ones_like(x),)))
            try:
                fd(jnp.zeros(4))
                self._f, self._fd = f, fd
            except (TypeError, jax.errors.JAXTypeError):  # numpy-only phi: central differences
                self._f = lambda x: np.asarray(fn(np.asarray(x)), np.float64)
                self._fd = lambda x: (self._f(x), (self._f(x + (h := 1e-5 * (1 + np.abs(x))))
                                                   - self._f(x - h)) / (2 * h))
        self.kinks = _find_kinks((self.f, lambda x: self.fd(x)[1]))

    def _call(self, g: Callable, x: np.ndarray):
        x = np.asarray(x, np.float64)
        n = x.size  # padded to 4 sizes per octave so the jitted functions compile a few times
        step = max(256, 1 << max(0, (n - 1).bit_length() - 2))
        buf = np.zeros(-(-n // step) * step)
        buf[:n] = x.ravel()
        with jax.enable_x64(True):
            out = g(buf)
        return tuple(np.asarray(o, np.float64)[:n].reshape(x.shape) for o in out)

    def f(self, x: np.ndarray) -> np.ndarray:
        return self._call(lambda u: (self._f(u),), x)[0]

    def fd(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._call(self._fd, x)


def _find_kinks(fns: tuple, lo: float = -50.0, hi: float = 50.0) -> np.ndarray:
    """Points where phi, phi' or phi'' jumps: outlying second differences, refined by zooming."""
    found, todo = [0.0], [(lo, hi, 6401)]
    while todo and len(found) < 33:
        a, b, n = todo.pop()
        x = np.linspace(a, b, n)
        d = np.stack([np.abs(np.diff(f(x), 2)) for f in fns])
        pad = np.zeros((len(fns), 3))
        nb = np.maximum(np.hstack([pad, d[:, :-3]]), np.hstack([d[:, 3:], pad]))
        hit = np.flatnonzero(((d > 1e-10) & (d > 8 * nb)).any(0))
        if n < 6401 and hit.size == 0:
            found.append(0.5 * (a + b))  # the jump is inside [a, b] but below resolution
            continue
        for grp in np.split(hit, np.flatnonzero(np.diff(hit) > 2) + 1) if hit.size else []:
            a2, b2 = x[max(grp[0] - 1, 0)], x[min(grp[-1] + 3, n - 1)]
            if b2 - a2 < 1e-8 * (1 + abs(a2)):
                m = 0.5 * (a2 + b2)
                found.append(round(m, 6) if abs(round(m, 6) - m) < b2 - a2 else m)
            else:
                todo.append((a2, b2, 65))
    k = np.unique(np.round(found, 12))
    return k[np.argsort(np.abs(k), kind="stable")][:17]


_CACHE: dict[Any, _Phi] = {}


def _resolve(act: Act | _Phi, params: Mapping[str, Any] | None = None) -> _Phi:
    """A registered name (with params), a Spec, or a plain callable phi, as a _Phi."""
    if isinstance(act, _Phi):
        return act
    if isinstance(act, str):
        act = activations.spec(act, **dict(params or {}))
    if isinstance(act, activations.Spec):
        sp = act
        key = (sp.name, tuple(sorted(sp.fixed.items())), tuple(sorted(sp.learned.items())))
        fn, name = (lambda x: sp(x, **sp.learned)), sp.name
    elif callable(act):
        key, fn, name = act, act, getattr(act, "__name__", repr(act))
    else:
        raise TheoryError(f"act must be a name, a Spec or a callable, not {type(act).__name__}")
    try:
        if key not in _CACHE:
            _CACHE[key] = _Phi(fn, name)
        return _CACHE[key]
    except TypeError:  # unhashable parameters
        return _Phi(fn, name)


def _panels(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on the panels between sorted edges (last axis)."""
    a, b = edges[..., :-1, None], edges[..., 1:, None]
    h = 0.5 * (b - a)
    shape = edges.shape[:-1] + (-1,)
    return (a + h * (1 + _GL_X)).reshape(shape), (h * _GL_W).reshape(shape)


def _moments(phi: _Phi, q: np.ndarray, deriv: bool = True):
    """E[phi^2], and with deriv E[phi'^2] and the slope E[z phi phi']/sqrt(q), at x = sqrt(q) z."""
    rq = np.sqrt(np.maximum(np.asarray(q, np.float64), _Q_FLOOR))[..., None]
    cuts = np.clip(np.concatenate([_X_EDGES, phi.kinks]) / rq, -_Z, _Z)
    edges = np.sort(np.concatenate([np.broadcast_to(_Z_EDGES, cuts.shape[:-1] + (41,)), cuts],
                                   -1), -1)
    z, w = _panels(edges)
    w = w * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if not deriv:
        return (w * phi.f(rq * z) ** 2).sum(-1)
    f, d = phi.fd(rq * z)
    return (w * f * f).sum(-1), (w * d * d).sum(-1), (w * z * f * d).sum(-1) / rq[..., 0]


def _kernel2(phi: _Phi, q1, q2, c, deriv: bool = False) -> np.ndarray:
    """E[phi(u1) phi(u2)] (and E[phi' phi'] with deriv) for Var u = q1, q2 and correlation c."""
    q1, q2, c = np.broadcast_arrays(*(np.asarray(v, np.float64) for v in (q1, q2, c)))
    s1, s2 = np.sqrt(np.maximum(q1, _Q_FLOOR)), np.sqrt(np.maximum(q2, _Q_FLOOR))
    c = np.clip(c, -1.0, 1.0)
    t0, s = np.arccos(c), np.sqrt(1.0 - c * c)
    # u1 = s1 r cos(t), u2 = s2 r cos(t - t0): split t where u1 or u2 is 0, and where kinks of
    # u1 and u2 fall at the same radius.
    ang = [t0 + k * np.pi / 2 for k in (1, 3)] + [np.full(c.shape, np.pi / 2 * k) for k in (1, 3)]
    knz = phi.kinks[phi.kinks != 0]
    for k1 in knz:
        for k2 in knz:
            a = np.arctan2(k2 * s1 - k1 * s2 * c, k1 * s2 * s)
            ang += [a, a + np.pi]
    ang = np.sort(np.mod(np.concatenate([np.stack(ang, -1), np.broadcast_to(
        _TH_EDGES, c.shape + (8,))], -1), 2 * np.pi), -1)
    th, wth = _panels(np.concatenate([ang, ang[..., :1] + 2 * np.pi], -1))
    cos1, cos2 = np.cos(th), np.cos(th - t0[..., None])
    with np.errstate(divide="ignore"):
        cuts = [k / (s1[..., None] * cos1) for k in knz] + [k / (s2[..., None] * cos2) for k in knz]
        cuts += [x / np.abs(sc * cs) for x in (1.0, 3.0) for sc, cs in
                 ((s1[..., None], cos1), (s2[..., None], cos2))]
    cuts = np.clip(np.stack(cuts, -1), 0.0, _R_EDGES[-1])
    r, wr = _panels(np.sort(np.concatenate(
        [np.broadcast_to(_R_EDGES, cuts.shape[:-1] + _R_EDGES.shape), cuts], -1), -1))
    u1 = (s1[..., None] * cos1)[..., None] * r
    u2 = (s2[..., None] * cos2)[..., None] * r
    wr = wr * r * np.exp(-0.5 * r * r) * wth[..., None] / (2 * np.pi)
    if not deriv:
        return (wr * phi.f(u1) * phi.f(u2)).sum((-1, -2))
    (f1, d1), (f2, d2) = phi.fd(u1), phi.fd(u2)
    return (wr * f1 * f2).sum((-1, -2)), (wr * d1 * d2).sum((-1, -2))


def _root(f: Callable, lo, hi, flo, fhi, rtol: float = 1e-15, atol: float = 0.0):
    """Vectorised Illinois (modified regula falsi) root of f in [lo, hi]; returns x, lo, hi."""
    lo, hi, flo, fhi = (np.array(v, np.float64) for v in (lo, hi, flo, fhi))
    lo, hi = np.where(fhi == 0, hi, lo), np.where(flo == 0, lo, hi)
    side = np.zeros(lo.shape)
    for _ in range(200):
        done = hi - lo <= rtol * np.maximum(abs(lo), abs(hi)) + atol
        if done.all():
            break
        x = (lo * fhi - hi * flo) / np.where(done, 1.0, fhi - flo)
        x = np.where((x > lo) & (x < hi), x, 0.5 * (lo + hi))
        fx = f(x)
        up = ~done & (np.sign(fx) == np.sign(flo))  # the root lies in [x, hi]
        dn = ~done & (np.sign(fx) == np.sign(fhi))
        fhi = np.where(up & (side == 1), 0.5 * fhi, fhi)  # Illinois: halve a twice-kept end
        flo = np.where(dn & (side == -1), 0.5 * flo, flo)
        lo, flo = np.where(up | (fx == 0), x, lo), np.where(up, fx, flo)
        hi, fhi = np.where(dn | (fx == 0), x, hi), np.where(dn, fx, fhi)
        side = np.where(up, 1, np.where(dn, -1, side))
    return 0.5 * (lo + hi), lo, hi


def _qstar(phi: _Phi, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The stable fixed point of the length map reached from q = 1 (vectorised); nan if none."""
    m2 = _moments(phi, _Q_GRID, deriv=False)
    g = w[..., None] * m2 + b[..., None] - _Q_GRID
    g0 = b + w * phi.f(np.zeros(1))[0] ** 2  # the map's excess at q = 0
    q, lo, hi = np.full(w.shape, np.nan), np.zeros(w.shape), np.zeros(w.shape)
    todo = np.zeros(w.shape, bool)
    i1 = int(np.flatnonzero(_Q_GRID == 1.0)[0])
    for i in np.ndindex(w.shape):
        gi, j = g[i], np.flatnonzero(g[i][:i1] >= 0)
        if np.all(np.abs(gi) <= 1e-10 * _Q_GRID):  # every q is fixed: scale-free phi, critical
            q[i] = 1.0
        elif gi[i1] >= 0:  # climb to the first crossing; none means q grows without bound
            up = np.flatnonzero(gi[i1:] < 0)
            if up.size:
                lo[i], hi[i], todo[i] = _Q_GRID[i1 + up[0] - 1], _Q_GRID[i1 + up[0]], True
        elif j.size or g0[i] > 0:
            lo[i], hi[i] = (_Q_GRID[j[-1]], _Q_GRID[j[-1] + 1]) if j.size else (0.0, _Q_GRID[0])
            todo[i] = True
        else:
            q[i] = 0.0  # ordered with sigma_b2 = 0 and phi(0) = 0: the signal dies out
    if todo.any():
        wt, bt = w[todo], b[todo]

        def excess(x):
            return wt * _moments(phi, x, deriv=False) + bt - x

        q[todo] = _root(excess, lo[todo], hi[todo], excess(lo[todo]), excess(hi[todo]))[0]
    return q


def _cstar(phi: _Phi, w, b, q) -> tuple[np.ndarray, np.ndarray]:
    """Stable c* < 1 and chi_c in the chaotic phase, by Newton's method from c = 0."""
    # With equal variances E[phi(u1) phi(u2)] = sum_n a_n^2 c^n (Mehler), so the map is convex
    # on [0, 1] and Newton's iterates rise monotonically to the root below c = 1.
    c = np.zeros(q.shape)
    for _ in range(100):
        k, kd = _kernel2(phi, q, q, c, deriv=True)
        h, dh = (w * k + b) / q - c, w * kd - 1.0
        step = np.where(dh < 0, -h / np.where(dh < 0, dh, -1.0), 0.0).clip(0.0, None)
        c = np.minimum(c + step, 1.0)
        if np.all(step < 1e-13):
            break
    return c, w * kd


def _fixed(phi: _Phi, w, b, corr: bool = True) -> dict[str, np.ndarray]:
    """q*, c*, chi1, chi_c and the length map's slope at q* (vectorised over w, b)."""
    w, b = np.broadcast_arrays(np.asarray(w, np.float64), np.asarray(b, np.float64))
    q = _qstar(phi, w, b)
    ok = np.isfinite(q)
    _, d2, slope = _moments(phi, np.where(ok, q, 1.0))
    chi1 = np.where(ok, w * d2, np.nan)
    c, chic = np.where(ok, 1.0, np.nan), chi1.copy()
    chaos = ok & (chi1 > 1 + 1e-12)
    if corr and chaos.any():
        c[chaos], chic[chaos] = _cstar(phi, w[chaos], b[chaos], q[chaos])
    return {"q_star": q, "c_star": c, "chi1": chi1, "chi_c": chic,
            "slope": np.where(ok, w * slope, np.nan)}


def _xi(rate: np.ndarray) -> np.ndarray:
    """Depth scale -1/ln|rate|: infinite at |rate| >= 1."""
    with np.errstate(divide="ignore"):
        return np.where(np.abs(rate) >= 1, np.inf, -1.0 / np.log(np.abs(rate)))


def _point(act: Act | _Phi, w: float, b: float, params, corr: bool = True) -> dict[str, float]:
    phi = _resolve(act, params)
    if not (w > 0 and b >= 0):
        raise TheoryError(f"need sigma_w2 > 0 and sigma_b2 >= 0, got {w:g}, {b:g}")
    fx = {k: float(v) for k, v in _fixed(phi, w, b, corr).items()}
    if not math.isfinite(fx["q_star"]):
        raise TheoryError(f"no fixed point of the length map for {phi.name} at sigma_w2={w:g}, "
                          f"sigma_b2={b:g}: q grows without bound")
    return fx


def _critical(phi: _Phi, b: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """sigma_w2 where chi1 = 1 for each sigma_b2 (nan where none), with the reasons."""
    out, why = np.full(b.shape, np.nan), [""] * b.size

    def h(w, bb):  # chi1 - 1; past the last fixed point q grows: count it as chaotic
        chi = _fixed(phi, w, bb, corr=False)["chi1"]
        return np.where(np.isfinite(chi), chi - 1.0, 1.0)

    hg = h(_W_GRID[None, :], b[:, None])
    j = np.where((hg >= 0).any(1), np.argmax(hg >= 0, 1), -1)  # first sigma_w2 with chi1 >= 1
    todo = j > 0
    for i in np.flatnonzero(~todo):
        why[i] = (f"chi1 < 1 for every sigma_w2 up to {_W_GRID[-1]:g}" if j[i] < 0
                  else f"chi1 >= 1 already at sigma_w2 = {_W_GRID[0]:g}")
    if todo.any():
        bt, jt, rows = b[todo], j[todo], np.flatnonzero(todo)
        x, _, xhi = _root(lambda w: h(w, bt), _W_GRID[jt - 1], _W_GRID[jt],
                          hg[rows, jt - 1], hg[rows, jt])
        exists = np.isfinite(_qstar(phi, x, bt)) & np.isfinite(_qstar(phi, xhi, bt))
        good = exists & (np.abs(h(x, bt)) < 1e-6)
        for i, xi, e, g in zip(np.flatnonzero(todo), x, exists, good, strict=True):
            out[i] = xi if g else np.nan
            why[i] = "" if g else ("chi1 < 1 wherever the length map has a fixed point "
                                   f"(q* diverges as sigma_w2 -> {xi:.6g})" if not e
                                   else f"chi1 jumps over 1 at sigma_w2 = {xi:.6g}")
    return out, why


def kernel(act: Act, q, c=1.0, *, derivative: bool = False,
           params: Mapping[str, Any] | None = None) -> np.ndarray:
    """E[phi(u1) phi(u2)] (or of phi') for u1, u2 of variance q and correlation c."""
    phi = _resolve(act, params)
    q, c = np.broadcast_arrays(np.asarray(q, np.float64), np.asarray(c, np.float64))
    if np.all(c == 1.0):  # one variable: exact at c = 1
        return _moments(phi, q)[1 if derivative else 0]
    return _kernel2(phi, q, q, c, derivative)[1] if derivative else _kernel2(phi, q, q, c)


def length_map(act: Act, sigma_w2: float, sigma_b2: float, q,
               *, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """q_{l+1} = sigma_w2 E[phi(sqrt(q_l) z)^2] + sigma_b2, vectorised over q."""
    return sigma_w2 * _moments(_resolve(act, params), np.asarray(q, np.float64), False) + sigma_b2


def corr_map(act: Act, sigma_w2: float, sigma_b2: float, c, q: float | None = None,
             *, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """c_{l+1} = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q_{l+1}, at q (default q*)."""
    phi = _resolve(act, params)
    q = q_star(phi, sigma_w2, sigma_b2) if q is None else q
    num = sigma_w2 * kernel(phi, q, c) + sigma_b2
    return num / (sigma_w2 * kernel(phi, q) + sigma_b2)


def q_star(act: Act, sigma_w2: float, sigma_b2: float,
           *, params: Mapping[str, Any] | None = None) -> float:
    """Stable fixed point of the length map reached from q = 1 (TheoryError if q diverges)."""
    return _point(act, sigma_w2, sigma_b2, params, corr=False)["q_star"]


def c_star(act: Act, sigma_w2: float, sigma_b2: float,
           *, params: Mapping[str, Any] | None = None) -> float:
    """Stable fixed point of the correlation map: 1 when ordered, below 1 when chaotic."""
    return _point(act, sigma_w2, sigma_b2, params)["c_star"]


def chi1(act: Act, sigma_w2: float, sigma_b2: float,
         *, params: Mapping[str, Any] | None = None) -> float:
    """sigma_w2 E[phi'(sqrt(q*) z)^2]: < 1 ordered (gradients vanish), > 1 chaotic (explode)."""
    return _point(act, sigma_w2, sigma_b2, params, corr=False)["chi1"]


def depth_scales(act: Act, sigma_w2: float, sigma_b2: float,
                 *, params: Mapping[str, Any] | None = None) -> tuple[float, float]:
    """(xi_q, xi_c) of Schoenholz et al. 2017; infinite where the map is marginal."""
    # 1/xi_q = -ln(chi1 + sigma_w2 E[phi'' phi]), the slope of the length map at q*, taken in
    # its integrated-by-parts form sigma_w2 E[z phi(sqrt(q*) z) phi'(sqrt(q*) z)] / sqrt(q*),
    # which needs no phi'' and stays exact at kinks (relu: sigma_w2 / 2).
    fx = _point(act, sigma_w2, sigma_b2, params)
    return float(_xi(np.float64(fx["slope"]))), float(_xi(np.float64(fx["chi_c"])))


def critical_sigma_w2(act: Act, sigma_b2: float,
                      *, params: Mapping[str, Any] | None = None) -> float:
    """The sigma_w2 where chi1 = 1 at this sigma_b2 (edge of chaos); TheoryError if none."""
    phi = _resolve(act, params)
    out, why = _critical(phi, np.array([float(sigma_b2)]))
    if not np.isfinite(out[0]):
        raise TheoryError(f"no critical sigma_w2 for {phi.name} at sigma_b2={sigma_b2:g}: {why[0]}")
    return float(out[0])


def edge_of_chaos(act: Act, sigma_b2_grid, *, params: Mapping[str, Any] | None = None):
    """Critical sigma_w2 for each sigma_b2 (nan where none exists)."""
    return _critical(_resolve(act, params), np.atleast_1d(np.asarray(sigma_b2_grid, float)))[0]


def predict_layers(act: Act, sigma_w2: float, sigma_b2: float, q0, depth: int, c0=None,
                   *, params: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Mean-field q_l, c_l, chi1_l and backward squared-norm ratios for layers l = 1..depth."""
    # q0 = x.x / n_in of the input (or a pair of them), c0 the inputs' cosine similarity; layer
    # 1 is linear in the input: q_1 = sigma_w2 q0 + sigma_b2. grad_ratio[l] = E|d_l|^2 / E|d_L|^2
    # for d_l the loss gradient at layer l's pre-activations: the product of chi1 over l..L-1.
    phi, w, b = _resolve(act, params), float(sigma_w2), float(sigma_b2)
    qv = np.broadcast_to(np.asarray(q0, np.float64), (2,)) * w + b
    qab = w * (1.0 if c0 is None else float(c0)) * math.sqrt(np.prod(qv - b) / w**2) + b
    qs, cs, chis = [], [], []
    for layer in range(int(depth)):
        if layer:
            if c0 is not None:
                qab = w * _kernel2(phi, qv[0], qv[1], qab / math.sqrt(qv[0] * qv[1])) + b
            qv = w * _moments(phi, qv, deriv=False) + b
        qs.append(qv.copy())
        cs.append(qab / math.sqrt(qv[0] * qv[1]))
        chis.append(w * _moments(phi, qv[0])[1])
    chi = np.array(chis, np.float64)
    out = {"layer": np.arange(1, int(depth) + 1), "q": np.array(qs)[:, 0] if np.ndim(q0) == 0
           else np.array(qs), "chi1": chi,
           "grad_ratio": np.append(np.cumprod(chi[:-1][::-1])[::-1], 1.0)}
    if c0 is not None:
        out["c"] = np.array(cs, np.float64)
    return out


def summary(act: Act, sigma_w2: float, sigma_b2: float,
            *, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fixed points, chi1, chi_c, depth scales, edge of chaos and trainable depth (~ 6 xi_c)."""
    phi = _resolve(act, params)
    fx = _point(phi, sigma_w2, sigma_b2, params)
    xi_q, xi_c = (float(_xi(np.float64(fx[k]))) for k in ("slope", "chi_c"))
    try:
        crit = critical_sigma_w2(phi, sigma_b2)
    except TheoryError:
        crit = math.nan
    phase = ("ordered" if fx["chi1"] < 1 - 1e-9 else "chaotic" if fx["chi1"] > 1 + 1e-9
             else "critical")
    return {"activation": phi.name, "sigma_w2": float(sigma_w2), "sigma_b2": float(sigma_b2),
            "q_star": fx["q_star"], "c_star": fx["c_star"], "chi1": fx["chi1"],
            "chi_c": fx["chi_c"], "xi_q": xi_q, "xi_c": xi_c, "critical_sigma_w2": crit,
            "trainable_depth": 6.0 * xi_c, "phase": phase}


def phase_diagram(act: Act, sigma_w2_grid, sigma_b2_grid,
                  *, params: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """q*, chi1, c*, xi_c on the grid (rows sigma_b2, columns sigma_w2) and the critical curve."""
    phi = _resolve(act, params)
    w = np.asarray(sigma_w2_grid, np.float64)
    b = np.asarray(sigma_b2_grid, np.float64)
    fx = _fixed(phi, w[None, :], b[:, None])
    xi_c = np.where(np.isfinite(fx["chi_c"]), _xi(np.nan_to_num(fx["chi_c"])), np.nan)
    return {"sigma_w2": w, "sigma_b2": b, "q_star": fx["q_star"], "chi1": fx["chi1"],
            "c_star": fx["c_star"], "xi_c": xi_c, "critical_sigma_w2": _critical(phi, b)[0]}
