"""Figures of the mean-field theory (actlab.theory): phase diagram, predicted vs measured layers.

Like actlab.analysis.plots, every function returns a Figure built in actlab's style context
(actlab.analysis.plots.style), takes plain arrays, dicts or tidy frames, and leaves matplotlib's
global state alone on import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from actlab.analysis.plots.style import _styled, _subplots, color_for

__all__ = ["phase_diagram", "signal_propagation", "signal_propagation_rows", "profile"]

_QUANTITIES = ("q", "c", "grad")
# metrics.jsonl keys: q/0, c/3, grad_norm/1, delta_norm/2
_FLAT = re.compile(r"^(q|c|grad_norm|delta_norm)/(\d+)$")
_PROFILE_KEYS = {"layer", "q", "c", "grad_norm", "delta_norm", "grad_ratio", "grad"}
# what a profile's 'grad' (relative to the last hidden layer) was computed from
GRAD_FROM = {
    "theory": "sqrt(grad_ratio): predicted backward signal E|delta_l|^2 / E|delta_last|^2",
    "delta_norm": "delta_norm/l: RMS per-example backward signal |d loss_b / d z_l|",
    "grad_norm_scaled": "grad_norm/l / sqrt(fan_in_l * mean input_l^2 + 1)",
    "grad_norm": "grad_norm/l, unscaled (layer 0 left out: its fan-in is the input's)",
}
_GRAD_AXIS = {  # the same, as the measured markers' axis label
    "delta_norm": r"measured: delta_norm, $\|\partial\ell_b/\partial z_l\|$ (RMS)",
    "grad_norm_scaled": r"measured: grad_norm$_l\,/\sqrt{n_l\langle x_l^2\rangle + 1}$",
    "grad_norm": "measured: grad_norm (unscaled, no layer 0)",
}


def _phase_label(ax, w: np.ndarray, b: np.ndarray, mask: np.ndarray, text: str) -> None:
    """Write `text` on a cell of `mask` near the middle of its cells (axes coordinates)."""
    rows, cols = np.nonzero(mask)
    if rows.size < 4:
        return
    r, c = np.median(rows), np.median(cols)
    k = np.argmin((rows - r) ** 2 + (cols - c) ** 2)
    ax.text(w[cols[k]], b[rows[k]], text, ha="center", va="center", fontsize=9, color="white",
            path_effects=[patheffects.withStroke(linewidth=2.2, foreground="black")])


@_styled
def phase_diagram(act: Any, sigma_w2: float | None = None, sigma_b2: float | None = None, *,
                  params: Mapping[str, Any] | None = None, sigma_w2_max: float | None = None,
                  sigma_b2_max: float | None = None, resolution: int = 32,
                  xi_cap: float = 100.0) -> Figure:
    """Heatmap of the correlation depth scale xi_c over sigma_w^2 (x) and sigma_b^2 (y).

    xi_c is drawn on a log colour scale capped at `xi_cap` layers (it is infinite on the
    edge of chaos). The edge of chaos (chi_1 = 1, from theory.edge_of_chaos) is drawn over
    it; cells where the length map has no fixed point (q* grows without bound) are hatched;
    the point (sigma_w2, sigma_b2), when given, is marked with a star. `act` is a registered
    name (with `params`), a Spec or a callable, as in actlab.theory.
    """
    from actlab import theory

    name = act if isinstance(act, str) else getattr(act, "name", getattr(act, "__name__", "phi"))
    if sigma_w2 is not None and sigma_b2 is None:
        sigma_b2 = 0.0
    w_max = sigma_w2_max or max(4.0, 1.5 * (sigma_w2 or 0.0))
    b_max = sigma_b2_max or max(0.3, 1.5 * (sigma_b2 or 0.0))
    n_w, n_b = int(resolution), max(int(resolution * 0.75), 2)
    w = (np.arange(n_w) + 0.5) * w_max / n_w  # cell centres
    b = (np.arange(n_b) + 0.5) * b_max / n_b
    pd_ = theory.phase_diagram(act, w, b, params=params)
    # the edge of chaos at the cell centres, the top and near 0 (where it can rise steeply)
    low = b[0] * np.array([0.0, 0.01, 0.05, 0.2, 0.5])
    ends = theory.edge_of_chaos(act, np.append(low, b_max), params=params)
    b_line = np.concatenate([low, b, [b_max]])
    w_crit = np.concatenate([ends[:-1], pd_["critical_sigma_w2"], ends[-1:]])

    fig, ax = _subplots(figsize=(5.8, 4.3))
    xi, diverges = pd_["xi_c"], ~np.isfinite(pd_["q_star"])
    finite = xi[np.isfinite(xi) & (xi > 0)]
    lo = max(float(finite.min()) if finite.size else 1.0, xi_cap * 1e-4)
    shown = np.ma.masked_invalid(np.clip(np.where(diverges, np.nan, xi), lo, xi_cap))
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.88")  # a copy: nothing shared changes
    mesh = ax.pcolormesh(w, b, shown, cmap=cmap, shading="nearest",
                         norm=LogNorm(vmin=lo, vmax=max(xi_cap, lo * 10)), rasterized=True)
    fig.colorbar(mesh, ax=ax, extend="max",
                 label=rf"$\xi_c$ (layers, log scale, capped at {xi_cap:g})")
    handles: list[Artist] = []
    if diverges.any():
        ax.contourf(w, b, diverges.astype(float), levels=[0.5, 1.5], colors="none",
                    hatches=["///"])
        handles.append(Patch(facecolor="0.88", edgecolor="0.3", hatch="///",
                             label=r"no fixed point ($q^*$ diverges)"))
    edge: dict[str, Any]
    edge = dict(color="white", lw=2.2,
                path_effects=[patheffects.withStroke(linewidth=4, foreground="black")])
    ax.plot(w_crit, b_line, **edge)
    ok = np.isfinite(w_crit)
    alone = ok & ~np.convolve(ok, [1, 0, 1], mode="same").astype(bool)  # no finite neighbour
    ax.plot(w_crit[alone], b_line[alone], ls="none", marker="o", ms=7, mfc="white", mec="black")
    handles.append(Line2D([], [], marker="o" if alone.any() and ok.sum() == alone.sum()
                          else None, **edge, label=r"edge of chaos ($\chi_1 = 1$)"))
    ordered = np.isfinite(pd_["chi1"]) & (pd_["chi1"] < 1)
    _phase_label(ax, w, b, ordered, "ordered\n" + r"$\chi_1 < 1$")
    _phase_label(ax, w, b, np.isfinite(pd_["chi1"]) & (pd_["chi1"] > 1),
                 "chaotic\n" + r"$\chi_1 > 1$")
    if sigma_w2 is not None:
        ax.plot([sigma_w2], [sigma_b2], ls="none", marker="*", ms=15, color=color_for(name),
                mec="black", mew=0.8, clip_on=False)
        handles.append(Line2D([], [], ls="none", marker="*", ms=11, color=color_for(name),
                              mec="black", mew=0.8,
                              label=rf"{name}: $\sigma_w^2$={sigma_w2:.4g}, "
                                    rf"$\sigma_b^2$={sigma_b2:.4g}"))
    ax.set(xlim=(0, w_max), ylim=(0, b_max), xlabel=r"$\sigma_w^2$ (weight variance $\times$ "
           "fan-in)", ylabel=r"$\sigma_b^2$ (bias variance)",
           title=f"{name}: mean-field phase diagram")
    ax.grid(False)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------- predicted vs measured

def _is_profile(d: Mapping) -> bool:
    return any(k in _PROFILE_KEYS or _FLAT.match(str(k)) for k in d)


def _rel(g: np.ndarray) -> np.ndarray:
    """A per-layer profile relative to its last layer."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return g / g[-1] if g.size else g


def profile(data: Mapping | pd.DataFrame, *,
            grad_scale: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
    """{'q', 'c', 'grad', 'grad_from'} ordered by hidden layer, from any of the accepted forms.

    Accepted: theory.predict_layers's dict (q, c, grad_ratio), a dict of arrays q, c,
    delta_norm and/or grad_norm (optionally with layer), a metrics record with flat keys
    q/<l>, c/<l>, delta_norm/<l>, grad_norm/<l> (l = 0 for the first hidden layer), a wide
    frame with those columns, a tidy frame (metric, layer, value; the first step and the
    mean over seeds and runs), or a profile (passed through).

    'grad' is the backward signal relative to the last hidden layer, and 'grad_from' (a key
    of GRAD_FROM) says what it was computed from: for a prediction sqrt(grad_ratio)
    (grad_ratio = E|delta_l|^2 / E|delta_last|^2, delta_l = d loss / d z_l); for a
    measurement delta_norm / delta_norm[last] when logged, which is what chi_1 governs, else
    grad_norm / grad_scale relative to the last layer, with `grad_scale` the per-layer
    sqrt(fan_in_l * mean input_l^2 + 1) that turns a Dense layer's gradient norm into its
    backward signal (actlab.analysis.report.grad_norm_scale). Without `grad_scale` a
    gradient norm is shown unscaled for the hidden layers that share the width as fan-in,
    and layer 0, whose fan-in is the input's, is left out (NaN).
    """
    if isinstance(data, pd.DataFrame):
        if {"metric", "value", "layer"} <= set(data.columns):
            sel = data[data["layer"].notna()]
            if "step" in sel.columns and len(sel):
                sel = sel[sel["step"] == sel["step"].min()]
            table = sel.groupby(["metric", "layer"])["value"].mean()
            data = {f"{m}/{int(layer)}": v for (m, layer), v in table.items()}
        else:
            frame = data.sort_values("layer") if "layer" in data.columns else data
            data = {k: frame[k].to_numpy(float) for k in
                    ("q", "c", "grad_norm", "delta_norm", "grad_ratio") if k in frame.columns}
    order = np.argsort(np.asarray(data["layer"])) if "layer" in data else None
    raw: dict[str, np.ndarray] = {}
    for k in ("q", "c", "grad_norm", "delta_norm", "grad_ratio", "grad"):
        if k in data:
            v = np.asarray(data[k], float)
            raw[k] = v[order] if order is not None else v
    flat: dict[str, dict[int, float]] = {}
    for k, v in data.items():
        m = _FLAT.match(str(k))
        if m:
            flat.setdefault(m.group(1), {})[int(m.group(2))] = float(v)
    for k, by_layer in flat.items():
        raw[k] = np.array([by_layer[i] for i in sorted(by_layer)])
    out: dict[str, Any] = {k: raw[k] for k in ("q", "c") if k in raw}
    if "grad" in raw:  # already a profile
        out["grad"], out["grad_from"] = raw["grad"], str(data.get("grad_from", "theory"))
    elif "grad_ratio" in raw:
        out["grad"], out["grad_from"] = np.sqrt(raw["grad_ratio"]), "theory"
    elif "delta_norm" in raw:
        out["grad"], out["grad_from"] = _rel(raw["delta_norm"]), "delta_norm"
    elif "grad_norm" in raw and grad_scale is not None:
        g = raw["grad_norm"] / np.asarray(grad_scale, float)
        out["grad"], out["grad_from"] = _rel(g), "grad_norm_scaled"
    elif "grad_norm" in raw:
        g = _rel(raw["grad_norm"])
        if g.size > 1:
            g[0] = np.nan
        out["grad"], out["grad_from"] = g, "grad_norm"
    return out


def _by_label(data: Mapping | pd.DataFrame, label: str | None) -> dict[str | None, dict]:
    if isinstance(data, pd.DataFrame):
        if "activation" in data.columns and label is None:
            return {str(k): profile(g) for k, g in data.groupby("activation", sort=False)}
        return {label: profile(data)}
    if _is_profile(data):
        return {label: profile(data)}
    return {str(k): profile(v) for k, v in data.items()}


def _draw(axes, curves, log_q: bool | None, title: str = "") -> list[Line2D]:
    """Draw (label, colour, predicted, measured) profiles on three axes; legend handles."""
    for _, colour, pred, meas in curves:
        for ax, q in zip(axes, _QUANTITIES, strict=True):
            if q in pred:
                ax.plot(np.arange(len(pred[q])), pred[q], color=colour, lw=1.6)
            if q in meas:
                ax.plot(np.arange(len(meas[q])), meas[q], color=colour, ls="none", marker="o",
                        ms=4.5, mfc="none", mew=1.2)
    qs = [p["q"] for _, _, *ps in curves for p in ps if "q" in p and p["q"].size]
    qpos = np.concatenate(qs)[np.concatenate(qs) > 0] if qs else np.array([])
    if log_q or (log_q is None and qpos.size and qpos.max() > 30 * qpos.min()):
        axes[0].set_yscale("log")
    axes[1].set_ylim(top=1.03)
    axes[2].set_yscale("log")
    lo, hi = axes[2].get_ylim()
    if 0 < lo < hi < 10 * lo:  # at least a decade, so that finite-width scatter reads as such
        mid = np.sqrt(lo * hi)
        axes[2].set_ylim(mid / np.sqrt(10), mid * np.sqrt(10))
    titles = (r"variance $q_l$", r"correlation $c_l$",
              r"backward signal $\|\delta_l\|$ / last layer's")
    for ax, t in zip(axes, titles, strict=True):
        ax.set(title=f"{title}: {t}" if title else t, xlabel="hidden layer (0 = first)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    sources = dict.fromkeys(m["grad_from"] for *_, m in curves if m.get("grad_from") in _GRAD_AXIS)
    if sources:  # what the markers are; the lines are sqrt(grad_ratio) of the theory
        axes[2].set_ylabel("\n".join(_GRAD_AXIS[s] for s in sources), fontsize=8)
    handles = [Line2D([], [], color=colour, lw=1.6, label=str(label))
               for label, colour, _, _ in curves]
    return handles + [Line2D([], [], color="0.3", lw=1.6, label="theory (mean field)"),
                      Line2D([], [], color="0.3", ls="none", marker="o", mfc="none",
                             label="measured (step 0)")]


@_styled
def signal_propagation(predicted: Mapping, measured: pd.DataFrame | Mapping | None = None, *,
                       label: str | None = None, log_q: bool | None = None) -> Figure:
    """Predicted (lines) vs measured (markers) q_l, c_l and backward signal per hidden layer.

    Three panels: the pre-activation variance q_l, the correlation c_l of two inputs, and the
    backward signal |d loss / d z_l| relative to the last hidden layer (log scale; measured:
    delta_norm, or a gradient norm as `profile` scales it, named on the axis). `predicted` is
    theory.predict_layers's dict (or a mapping label -> such dicts); `measured` is any form
    `profile` accepts (or a mapping label -> one; a tidy frame with an `activation` column
    is split by it). Layers are matched in order, 0 = the first hidden layer (predict_layers's
    layer 1). One colour per activation (plotstyle.color_for); a missing quantity leaves its
    panel without that curve.
    """
    pred = _by_label(predicted, label)
    meas = _by_label(measured, label) if measured is not None else {}
    if label is None and len(pred) == 1 and len(meas) == 1 and None in (*pred, *meas):
        name = next((k for k in (*pred, *meas) if k is not None), None)
        pred, meas = {name: next(iter(pred.values()))}, {name: next(iter(meas.values()))}
    fig, axes = _subplots(1, 3, figsize=(11.5, 3.4))
    names = {k: k if k is not None else "network" for k in dict.fromkeys([*pred, *meas])}
    curves = [(n, color_for(n), pred.get(k, {}), meas.get(k, {})) for k, n in names.items()]
    handles = _draw(axes, curves, log_q)
    axes[2].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


@_styled
def signal_propagation_rows(rows: Mapping[str, Sequence[tuple[str, Mapping, Any]]], *,
                            log_q: bool | None = None, cmap: str = "viridis") -> Figure:
    """One row of the three signal_propagation panels per activation, one colour per setting.

    `rows` maps a row title (an activation) to its settings, each (label, predicted,
    measured): theory.predict_layers's dict and any form `profile` accepts (or None). Within
    a row the settings take colours along `cmap` in the order given (e.g. by sigma_w2), so a
    sweep over the variances reads as a gradient; lines are the theory, markers the
    measurement.
    """
    rows = {k: list(v) for k, v in rows.items() if len(v)}
    n = max(len(rows), 1)
    fig, axes = _subplots(n, 3, figsize=(12.5, 3.1 * n), squeeze=False)
    colours = mpl.colormaps[cmap]
    for ax_row, (title, settings) in zip(axes, rows.items(), strict=False):
        k = len(settings)
        curves = [(label, colours(0.1 + 0.75 * i / max(k - 1, 1)), profile(p),
                   profile(m) if m is not None else {})
                  for i, (label, p, m) in enumerate(settings)]
        handles = _draw(ax_row, curves, log_q, title=str(title))
        ax_row[2].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5),
                         fontsize=8)
    for ax in axes.flat[3 * len(rows):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
