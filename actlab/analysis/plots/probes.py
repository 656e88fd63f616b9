"""Figures of the curvature probes (actlab.measure.probes): sharpness against 2/lr, Hessian spectra.

Like actlab.analysis.plots, every function returns a Figure built in actlab's style context
(actlab.analysis.plots.style), takes tidy frames from actlab.analysis (load_run, load_density)
or a run directory, and leaves matplotlib's global state alone on import.
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from actlab import analysis
from actlab.analysis.plots.style import _styled, _subplots

__all__ = ["sharpness", "hessian_density"]


@_styled
def sharpness(df: pd.DataFrame, log: bool = False) -> Figure:
    """hessian/top_eig over training steps with the gradient-descent stability limit 2/lr.

    One solid line per (run, learning rate), the mean over seeds, and a dashed line of
    the same colour at 2/lr: plain gradient descent with rate lr is unstable along
    directions of curvature above 2/lr, and full-batch training tends to hover there
    (the edge of stability, Cohen et al. 2021). lr is the member's own: the `lr` column
    of analysis.load_run (a vmapped optimizer.lr, else the run's). Colours follow lr.
    """
    sel = df[(df["metric"] == "hessian/top_eig") & df["layer"].isna()]
    fig, axes = _subplots(1, 1, figsize=(5.2, 3.4), squeeze=False)
    ax = axes[0][0]
    lrs = sorted({float(v) for v in sel["lr"].dropna()}) if "lr" in sel else []
    cmap = mpl.colormaps["viridis"]
    several = sel["run"].nunique() > 1 if "run" in sel else False
    for (_, lr), g in sel.groupby(["run", "lr"], sort=True):
        c = cmap(lrs.index(float(lr)) / max(len(lrs) - 1, 1) * 0.9)
        mean = g.groupby("step")["value"].mean()
        label = f"lr={lr:g}" + (f" ({g['activation'].iat[0]})" if several else "")
        ax.plot(mean.index, mean.values, color=c, lw=1.4, label=label)
        ax.axhline(2.0 / float(lr), color=c, lw=1.0, ls="--")
    ax.set(xlabel="step", ylabel="sharpness: top Hessian eigenvalue",
           title="sharpness and 2/lr (dashed)")
    if log:
        ax.set_yscale("log")
    if ax.lines:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


@_styled
def hessian_density(src, sigma: float | None = None, points: int = 400, log: bool = True,
                    max_panels: int = 4) -> Figure:
    """The Hessian's spectral density over training: one line per probe step, colour = step.

    `src`: a run directory or an analysis.load_density frame. Each line is the
    Gaussian-smoothed stochastic Lanczos quadrature (actlab.measure.probes.density) of one probe
    step: an eigenvalue density of the probe-batch loss Hessian that integrates to 1 (the
    fraction of the n eigenvalues per unit eigenvalue). One panel per member (seed and
    vmapped values), at most `max_panels`. sigma: the smoothing width (default 1% of
    the range of the quadrature nodes); log: a logarithmic density axis, where the
    outliers, each 1/n of the mass, show beside the bulk near zero.
    """
    from actlab.measure.probes import density

    df = src if isinstance(src, pd.DataFrame) else analysis.load_density(src)
    ok = [bool(np.isfinite(n).all() and np.isfinite(w).all())
          for n, w in zip(df["nodes"], df["weights"], strict=True)]
    df = df[ok]
    ids = [c for c in df.columns if c not in ("step", "nodes", "weights")]
    groups = list(df.groupby(ids, sort=True)) if ids and len(df) else [((), df)]
    groups = groups[:max_panels]
    fig, axes = _subplots(1, len(groups), figsize=(4.2 * len(groups), 3.3), squeeze=False,
                          sharey=True)
    steps = df["step"].to_numpy() if len(df) else np.zeros(1)
    norm = mpl.colors.Normalize(vmin=float(steps.min()), vmax=float(max(steps.max(), 1)))
    cmap = mpl.colormaps["viridis"]
    for ax, (key, g) in zip(axes[0], groups, strict=True):
        if len(g):
            used = [n[w > 0] for n, w in zip(g["nodes"], g["weights"], strict=True)]
            lo = min(float(u.min()) for u in used if u.size)
            hi = max(float(u.max()) for u in used if u.size)
            width = sigma or max(0.01 * (hi - lo), 1e-6)
            grid = np.linspace(lo - 4 * width, hi + 4 * width, points)
            top = 0.0
            for row in g.sort_values("step").itertuples():
                rho = density(row.nodes, row.weights, grid, width)
                top = max(top, float(rho.max()))
                ax.plot(grid, rho, color=cmap(norm(row.step)), lw=1.0)
            if log and top > 0:
                ax.set_yscale("log")
                ax.set_ylim(top * 1e-6, top * 2)
        key = key if isinstance(key, tuple) else (key,)
        ax.set(xlabel="Hessian eigenvalue",
               title=", ".join(f"{c}={v}" for c, v in zip(ids, key, strict=False)))
    axes[0][0].set_ylabel("spectral density")
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes[0]), label="step")
    return fig
