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

q* is the stable fixed point that q = 1 flows to (1 by convention where every q is fixed, as
for relu at sigma_w2 = 2, sigma_b2 = 0); where q grows without bound there is none. Fixed
points and the edge of chaos are found by scanning and bracketed root finding. Expectations
are composite Gauss-Legendre sums split at the kinks of phi (actlab.theory.quadrature), so kinked
functions (relu, selu, hard_tanh) are integrated as accurately as smooth ones. phi and phi'
come in float64 from the registry's Spec, or from a plain callable and jax.jvp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from actlab import activations
from actlab.errors import UserError
from actlab.theory.quadrature import _kernel2, _moments, _Phi

Act = str | activations.Spec | Callable[..., Any]

_Q_GRID = 4.0 ** np.arange(-19, 28)  # where the length map is scanned, 4e-12 .. 2e16
_W_GRID = np.geomspace(1e-3, 1e5, 65)  # where chi1 = 1 is scanned for


class TheoryError(UserError):
    """A mean-field quantity that does not exist for these settings (one-line message)."""


_CACHE: dict[Any, _Phi] = {}


def _resolve(act: Act | _Phi, params: Mapping[str, Any] | None = None) -> _Phi:
    """A registered name (with params), a Spec, or a plain callable phi, as a _Phi."""
    if isinstance(act, _Phi):
        return act
    if isinstance(act, str):
        act = activations.spec(act, **dict(params or {}))
    elif params:
        raise TheoryError("params go with a registered name; a Spec or a callable carries its own")
    if isinstance(act, activations.Spec) and act.gated:
        raise TheoryError(f"'{act.name}' is a gated unit g(z_g) * z_v: the mean-field maps "
                          f"here are for elementwise activations (its gate: {act.gate.name})")
    # A doubled unit (crelu) is taken as its elementwise phi: its layer outputs phi(z) and
    # phi(-z) side by side, and z ~ -z, (u1, u2) ~ (-u1, -u2), so E[h^2], E[h(u1) h(u2)] and
    # E[phi'^2] per output entry are phi's; the next layer's fan-in is the doubled width,
    # which Var w = sigma_w2 / fan_in takes in, so the maps and chi1 above hold unchanged.
    key: Any  # hashable: the Spec's name and parameters, or the callable itself
    if isinstance(act, activations.Spec):
        key = (act.name, tuple(sorted(act.fixed.items())), tuple(sorted(act.learned.items())))
        fn, name = (lambda x, sp=act: sp(x, **sp.learned)), act.name
    elif callable(act):
        key, fn, name = act, act, getattr(act, "__name__", repr(act))
    else:
        raise TheoryError(f"act must be a name, a Spec or a callable, not {type(act).__name__}")
    try:
        return _CACHE[key] if key in _CACHE else _CACHE.setdefault(key, _Phi(fn, name))
    except TypeError:  # unhashable parameters
        return _Phi(fn, name)


def _root(f: Callable, lo, hi, flo, fhi, rtol: float = 1e-15):
    """Vectorised Illinois (modified regula falsi) root of f in [lo, hi]; returns x, lo, hi."""
    lo, hi, flo, fhi = (np.array(v, np.float64) for v in (lo, hi, flo, fhi))
    lo, hi = np.where(fhi == 0, hi, lo), np.where(flo == 0, lo, hi)
    side = np.zeros(lo.shape)
    for _ in range(200):
        done = hi - lo <= rtol * np.maximum(abs(lo), abs(hi))
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
    qg = np.concatenate([[0.0], _Q_GRID])
    m2 = np.concatenate([phi.fd(np.zeros(1))[0] ** 2, _moments(phi, _Q_GRID, deriv=False)])
    g = w[..., None] * m2 + b[..., None] - qg  # the length map's excess over q
    q, j, i1 = np.full(w.shape, np.nan), np.full(w.shape, -1), int(np.flatnonzero(qg == 1)[0])
    for i in np.ndindex(w.shape):
        up, dn = np.flatnonzero(g[i][i1:] < 0), np.flatnonzero(g[i][:i1] > 0)
        if np.all(np.abs(g[i]) <= 1e-10 * qg):  # every q is fixed (scale-free phi): call it 1
            q[i] = 1.0
        elif g[i][i1] >= 0:  # climb to the first crossing; none: q grows without bound
            j[i] = i1 + up[0] - 1 if up.size else -1
        elif dn.size:
            j[i] = dn[-1]
        else:
            q[i] = 0.0  # ordered with sigma_b2 = 0 and phi(0) = 0: the signal dies out
    t = j >= 0
    if t.any():
        wt, bt, jt, gt = w[t], b[t], j[t], g[t]
        flo, fhi = (np.take_along_axis(gt, k[:, None], -1)[:, 0] for k in (jt, jt + 1))
        q[t] = _root(lambda x: wt * _moments(phi, x, deriv=False) + bt - x, qg[jt], qg[jt + 1],
                     flo, fhi)[0]
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


def _xi(rate: np.ndarray | np.float64, marginal: float = 1e-10) -> np.ndarray:
    """Depth scale -1/ln|rate|: infinite at |rate| >= 1 (to the quadrature's accuracy)."""
    with np.errstate(divide="ignore"):  # nan stays nan
        return np.where(np.abs(rate) >= 1 - marginal, np.inf, -1.0 / np.log(np.abs(rate)))


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
        why[i] = f"chi1 {'< 1 for all' if j[i] < 0 else '>= 1 for every'} sigma_w2 in [1e-3, 1e5]"
    if todo.any():
        bt, jt, rows = b[todo], j[todo], np.flatnonzero(todo)
        x, _, xhi = _root(lambda w: h(w, bt), _W_GRID[jt - 1], _W_GRID[jt],
                          hg[rows, jt - 1], hg[rows, jt])
        exists = np.isfinite(_qstar(phi, x, bt)) & np.isfinite(_qstar(phi, xhi, bt))
        good = exists & (np.abs(h(x, bt)) < 1e-6)
        out[rows] = np.where(good, x, np.nan)
        for i, xi, e in zip(rows, x, exists, strict=True):
            why[i] = (f"chi1 jumps over 1 at sigma_w2 = {xi:.6g}" if e else "chi1 < 1 wherever "
                      f"the length map has a fixed point (q* diverges as sigma_w2 -> {xi:.6g})")
    return out, why


Params = Mapping[str, Any] | None  # the activation's parameters when act is a name


def kernel(act: Act | _Phi, q, c=1.0, *, derivative: bool = False,
           params: Params = None) -> np.ndarray:
    """E[phi(u1) phi(u2)] (or E[phi'(u1) phi'(u2)]) for Var u1 = Var u2 = q, correlation c."""
    phi = _resolve(act, params)
    q, c = np.broadcast_arrays(np.asarray(q, np.float64), np.asarray(c, np.float64))
    if np.all(c == 1.0):  # one variable
        return _moments(phi, q)[int(derivative)]
    return _kernel2(phi, q, q, c, derivative)[1] if derivative else _kernel2(phi, q, q, c)


def length_map(act: Act, sigma_w2: float, sigma_b2: float, q, *, params: Params = None):
    """q_{l+1} = sigma_w2 E[phi(sqrt(q_l) z)^2] + sigma_b2, vectorised over q."""
    return sigma_w2 * kernel(act, q, params=params) + sigma_b2


def corr_map(act: Act, sigma_w2: float, sigma_b2: float, c, q: float | None = None,
             *, params: Params = None) -> np.ndarray:
    """c_{l+1} = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q_{l+1} at q_l = q (default q*)."""
    phi = _resolve(act, params)
    q = q_star(phi, sigma_w2, sigma_b2) if q is None else q
    return (sigma_w2 * kernel(phi, q, c) + sigma_b2) / (sigma_w2 * kernel(phi, q) + sigma_b2)


def q_star(act: Act | _Phi, sigma_w2: float, sigma_b2: float, *,
           params: Params = None) -> float:
    """The stable fixed point of the length map that q = 1 flows to (TheoryError if q diverges)."""
    return _point(act, sigma_w2, sigma_b2, params, corr=False)["q_star"]


def chi1(act: Act, sigma_w2: float, sigma_b2: float, *, params: Params = None) -> float:
    """sigma_w2 E[phi'(sqrt(q*) z)^2]: < 1 ordered (gradients vanish), > 1 chaotic (explode)."""
    return _point(act, sigma_w2, sigma_b2, params, corr=False)["chi1"]


def depth_scales(act: Act, sigma_w2: float, sigma_b2: float,
                 *, params: Params = None) -> tuple[float, float]:
    """(xi_q, xi_c) of Schoenholz et al. 2017; infinite where the map is marginal."""
    # 1/xi_q = -ln(chi1 + sigma_w2 E[phi'' phi]) is minus the log slope of the length map at q*;
    # integrating by parts gives it as sigma_w2 E[z phi(sqrt(q*) z) phi'(sqrt(q*) z)] / sqrt(q*),
    # which needs no phi'' and stays exact at kinks (relu: sigma_w2 / 2).
    fx = _point(act, sigma_w2, sigma_b2, params)
    return float(_xi(np.float64(fx["slope"]))), float(_xi(np.float64(fx["chi_c"])))


def critical_sigma_w2(act: Act, sigma_b2: float, *, params: Params = None) -> float:
    """The sigma_w2 with chi1 = 1 at this sigma_b2 (edge of chaos); TheoryError if none."""
    phi = _resolve(act, params)
    out, why = _critical(phi, np.array([float(sigma_b2)]))
    if not np.isfinite(out[0]):
        raise TheoryError(f"no critical sigma_w2 for {phi.name} at sigma_b2={sigma_b2:g}: {why[0]}")
    return float(out[0])


def edge_of_chaos(act: Act | _Phi, sigma_b2_grid, *, params: Params = None) -> np.ndarray:
    """The critical sigma_w2 for each sigma_b2 (nan where none exists)."""
    return _critical(_resolve(act, params), np.atleast_1d(np.asarray(sigma_b2_grid, float)))[0]


def predict_layers(act: Act, sigma_w2: float, sigma_b2: float, q0: float | tuple[float, float],
                   depth: int, c0: float | None = None, *, params: Params = None) -> dict:
    """q_l (and c_l), chi1_l and backward squared-norm ratios for layers l = 1..depth."""
    # q0 = x.x / n_in for an input x (or a pair, one per input), c0 the inputs' cosine; layer 1
    # is linear in x: q_1 = sigma_w2 q0 + sigma_b2. grad_ratio[l] = E|g_l|^2 / E|g_L|^2 for g_l
    # the loss gradient at layer l's pre-activations: the product of chi1_k over k = l..L-1.
    phi, w, b = _resolve(act, params), float(sigma_w2), float(sigma_b2)
    if depth < 1 or np.any(np.asarray(q0) < 0) or (c0 is not None and abs(c0) > 1):
        raise TheoryError(f"need depth >= 1, q0 >= 0 and |c0| <= 1, got {depth}, {q0}, {c0}")
    qin = np.broadcast_to(np.asarray(q0, np.float64), (2,))
    qv, qab = w * qin + b, w * (1.0 if c0 is None else c0) * math.sqrt(qin[0] * qin[1]) + b
    qs, cs, chis = [], [], []
    for layer in range(int(depth)):
        if layer:
            if c0 is not None:
                qab = w * _kernel2(phi, qv[0], qv[1], qab / math.sqrt(qv[0] * qv[1])) + b
            qv = w * _moments(phi, qv, deriv=False) + b
        qs.append(qv if np.ndim(q0) else qv[0])
        cs.append(qab / math.sqrt(qv[0] * qv[1]))
        chis.append(w * _moments(phi, qv[0])[1])
    chi = np.array(chis)
    out = {"layer": np.arange(1, int(depth) + 1), "q": np.array(qs), "chi1": chi,
           "grad_ratio": np.append(np.cumprod(chi[:-1][::-1])[::-1], 1.0)}
    return out if c0 is None else {**out, "c": np.array(cs)}


def summary(act: Act, sigma_w2: float, sigma_b2: float, *, params: Params = None) -> dict[str, Any]:
    """Fixed points, chi1, chi_c, depth scales, critical sigma_w2, trainable depth (~ 6 xi_c)."""
    phi = _resolve(act, params)
    fx = _point(phi, sigma_w2, sigma_b2, params)
    xi_q, xi_c = (float(_xi(np.float64(fx[k]))) for k in ("slope", "chi_c"))
    crit = edge_of_chaos(phi, sigma_b2)[0]
    phase = ("ordered", "critical", "chaotic")[int(np.sign(np.round(fx["chi1"] - 1, 9))) + 1]
    return {"activation": phi.name, "sigma_w2": float(sigma_w2), "sigma_b2": float(sigma_b2),
            **{k: fx[k] for k in ("q_star", "c_star", "chi1", "chi_c")}, "xi_q": xi_q,
            "xi_c": xi_c, "critical_sigma_w2": float(crit), "trainable_depth": 6.0 * xi_c,
            "phase": phase}


def phase_diagram(act: Act, sigma_w2_grid, sigma_b2_grid, *, params: Params = None) -> dict:
    """q*, chi1, c*, xi_c on the grid (rows sigma_b2, columns sigma_w2) and the critical curve."""
    phi = _resolve(act, params)
    w, b = np.asarray(sigma_w2_grid, np.float64), np.asarray(sigma_b2_grid, np.float64)
    fx = _fixed(phi, w[None, :], b[:, None])
    return {"sigma_w2": w, "sigma_b2": b, "q_star": fx["q_star"], "chi1": fx["chi1"],
            "c_star": fx["c_star"], "xi_c": _xi(fx["chi_c"]),
            "critical_sigma_w2": _critical(phi, b)[0]}
