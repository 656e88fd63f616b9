"""Matplotlib figures for notebooks, the CLI and reports.

Every function returns a Figure and takes tidy frames from actlab.analysis (or
plain arrays), never training internals. Colours are fixed per activation
(Okabe-Ito, colour-blind safe, for the classic functions), so one activation
has one colour in every figure.

The figures of the mean-field theory are in actlab.analysis.plots.theory, those of the
curvature probes (sharpness, Hessian spectral density) in actlab.analysis.plots.probes.

Importing this module leaves matplotlib alone (see actlab.analysis.plots.style): figures are
drawn in actlab's style context and need no backend; in a notebook they show
through the notebook's own backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from actlab.analysis.plots.style import (
    PALETTE,
    STYLE,
    StyledFigure,
    _figure,
    _style,
    _styled,
    _subplots,
    color_for,
    offscreen,
    savefig,
    style,
)

__all__ = ["PALETTE", "STYLE", "StyledFigure", "color_for", "offscreen", "savefig", "style",
           "activation_grid", "activation_curves", "layer_profile", "layer_heatmap",
           "dead_saturated", "learning_curves", "convergence", "distributions",
           "decision_boundary"]


@_styled
def activation_grid(names: Sequence[str], xlim: float = 5.0, cols: int = 6) -> Figure:
    """One small panel per activation: phi (solid) and phi' (dashed) on [-xlim, xlim].

    Learnable functions are drawn at their initial parameters; a gated unit is drawn as
    its gate g, with "gate: g" at the panel's top right.
    """
    import jax.numpy as jnp

    from actlab import activations

    rows = math.ceil(len(names) / cols)
    fig, axes = _subplots(rows, cols, figsize=(2.3 * cols, 2.0 * rows), squeeze=False,
                          sharex=True)
    x = jnp.linspace(-xlim, xlim, 801)
    for ax, name in zip(axes.flat, names, strict=False):
        sp = activations.spec(name)
        fn, gate = (sp.gate, sp.gate.name) if sp.gated else (sp, None)
        learned = {k: jnp.float32(v) for k, v in sp.learned.items()}
        phi, dphi = np.asarray(fn(x, **learned)), np.asarray(fn.derivative(x, **learned))
        ax.axhline(0, color="0.85", lw=0.8)
        ax.axvline(0, color="0.85", lw=0.8)
        ax.plot(x, phi, color=PALETTE[0], lw=1.6, label=r"$\phi$")
        ax.plot(x, dphi, color=PALETTE[1], lw=1.3, ls="--", label=r"$\phi'$")
        ax.set_title(name, fontsize=9)
        if gate is not None:
            ax.set_title(f"gate: {gate}", loc="right", fontsize=7, color="0.4")
        ax.set_ylim(-1.6, 3.2)
        ax.tick_params(labelsize=7)
        ax.grid(False)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


@_styled
def activation_curves(names: Sequence[str], xlim: float = 4.0) -> Figure:
    """phi and phi' of several activations overlaid (two panels, one line per activation).

    Learnable functions are drawn at their initial parameters, a gated unit as its gate.
    """
    import jax.numpy as jnp

    from actlab import activations

    fig, (a0, a1) = _subplots(1, 2, figsize=(9, 3.4))
    x = jnp.linspace(-xlim, xlim, 801)
    for name in names:
        sp = activations.spec(name)
        fn = sp.gate if sp.gated else sp
        learned = {k: jnp.float32(v) for k, v in sp.learned.items()}
        phi, dphi = np.asarray(fn(x, **learned)), np.asarray(fn.derivative(x, **learned))
        label = f"{name} (gate: {fn.name})" if sp.gated else name
        a0.plot(x, phi, label=label, **_style(name))
        a1.plot(x, dphi, label=label, **_style(name))
    a0.set(title=r"$\phi(x)$", xlabel="x", ylim=(-1.5, xlim))
    a1.set(title=r"$\phi'(x)$", xlabel="x", ylim=(-0.3, 1.3))
    a1.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def _at_step(df: pd.DataFrame, step: str | int) -> pd.DataFrame:
    if step == "last":
        return df[df["step"] == df.groupby("run")["step"].transform("max")]
    if step == "first":
        return df[df["step"] == df.groupby("run")["step"].transform("min")]
    return df[df["step"] == step]


@_styled
def layer_profile(df: pd.DataFrame, metric: str = "grad_norm", step: str | int = "last",
                  by: str = "activation", log: bool = True) -> Figure:
    """Per-layer profile of a metric (layer on x), one line per `by` value, a panel per depth.

    Lines are the mean over seeds and runs; the band spans min..max over seeds.
    """
    sel = _at_step(df[(df["metric"] == metric) & df["layer"].notna()], step)
    depths = sorted(sel["depth"].dropna().unique()) or [None]
    fig, axes = _subplots(1, len(depths), figsize=(3.6 * len(depths), 3.2), squeeze=False,
                          sharey=True)
    for ax, depth in zip(axes[0], depths, strict=True):
        part = sel if depth is None else sel[sel["depth"] == depth]
        for key, g in part.groupby(by, sort=True):
            stats = g.groupby("layer")["value"].agg(["mean", "min", "max"])
            layers = stats.index.astype(int)
            ax.plot(layers, stats["mean"], marker="o", ms=3, label=str(key), **_style(key))
            ax.fill_between(layers, stats["min"], stats["max"], alpha=0.15,
                            color=color_for(key), lw=0)
        ax.set(xlabel="layer (0 = first hidden)", title=f"depth {depth}" if depth else "")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
    axes[0][0].set_ylabel(f"{metric} (step: {step})")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


@_styled
def layer_heatmap(df: pd.DataFrame, metric: str = "grad_norm", log: bool = True,
                  max_panels: int = 12) -> Figure:
    """Layer x step heatmap of a per-layer metric (mean over seeds), one panel per run."""
    sel = df[(df["metric"] == metric) & df["layer"].notna()]
    runs = list(dict.fromkeys(sel["run"]))[:max_panels]
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = _subplots(rows, cols, figsize=(4.0 * cols, 2.8 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs, strict=False):
        g = sel[sel["run"] == run]
        grid = g.pivot_table(index="layer", columns="step", values="value", aggfunc="mean")
        values = np.log10(np.maximum(grid.values, 1e-30)) if log else grid.values
        im = ax.imshow(values, aspect="auto", origin="lower", cmap="viridis",
                       extent=(grid.columns.min(), grid.columns.max(), -0.5, len(grid) - 0.5))
        first = g.iloc[0]
        ax.set(title=f"{first['activation']} d{first['depth']}", xlabel="step", ylabel="layer")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(False)
        fig.colorbar(im, ax=ax, label=f"log10 {metric}" if log else metric)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


@_styled
def dead_saturated(df: pd.DataFrame, by: str = "activation") -> Figure:
    """dead_frac and sat_frac over training: a row per `by` value, a line per layer."""
    sel = df[df["metric"].isin(["dead_frac", "sat_frac"]) & df["layer"].notna()]
    keys = sorted(sel[by].unique(), key=str)
    fig, axes = _subplots(len(keys), 2, figsize=(8, 2.2 * len(keys) + 0.4), squeeze=False,
                          sharex=True, sharey=True)
    cmap = mpl.colormaps["viridis"]
    for row, key in zip(axes, keys, strict=True):
        for ax, metric in zip(row, ("dead_frac", "sat_frac"), strict=True):
            g = sel[(sel[by] == key) & (sel["metric"] == metric)]
            stats = g.groupby(["layer", "step"])["value"].mean().unstack("layer")
            n = max(len(stats.columns), 2)
            for i, layer in enumerate(stats.columns):
                ax.plot(stats.index, stats[layer], color=cmap(i / (n - 1)), lw=1.2,
                        label=f"layer {layer}")
            ax.set(title=f"{key}: {metric}", ylim=(-0.03, 1.03))
    for ax in axes[-1]:
        ax.set_xlabel("step")
    if len(axes[0][1].lines) <= 12:
        axes[0][1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    return fig


@_styled
def learning_curves(df: pd.DataFrame, metrics: Sequence[str] = ("train/loss", "eval/acc"),
                    by: str = "activation", band: str = "std") -> Figure:
    """Loss/accuracy over steps, mean over seeds with a band (std, or 95% bootstrap 'ci')."""
    from actlab.runs.records import bootstrap_ci

    fig, axes = _subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sel = df[df["metric"] == metric]
        for key, g in sel.groupby(by, sort=True):
            per_step = g.groupby("step")["value"]
            mean = per_step.mean()
            if band == "ci":
                lo_hi = per_step.apply(lambda v: bootstrap_ci(v.to_numpy()))
                lo = lo_hi.map(lambda t: t[0])
                hi = lo_hi.map(lambda t: t[1])
            else:
                sd = per_step.std(ddof=0).fillna(0)
                lo, hi = mean - sd, mean + sd
            ax.plot(mean.index, mean.values, label=str(key), **_style(key))
            ax.fill_between(mean.index, lo.values, hi.values, alpha=0.2, color=color_for(key),
                            lw=0)
        ax.set(xlabel="step", ylabel=metric)
        if "loss" in metric:
            ax.set_yscale("log")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


@_styled
def convergence(summ: pd.DataFrame, by: str = "activation", hue: str = "depth") -> Figure:
    """steps_to_target per `by` (rows) and `hue` (markers) with 95% bootstrap intervals.

    Groups where no member reached the target are drawn as open markers at the
    right edge, labelled 'not reached'; partial success is annotated k/n.
    """
    from actlab.runs.records import bootstrap_ci

    keys = sorted(summ[by].unique(), key=str)
    hues = sorted(summ[hue].unique(), key=str) if hue in summ else [None]
    fig, ax = _subplots(figsize=(6.5, 0.45 * len(keys) * max(1, len(hues)) ** 0.5 + 1.2))
    reached = summ["steps_to_target"].dropna()
    right = float(reached.max()) * 1.15 if len(reached) else 1.0
    markers = "osD^vP*X"
    for j, h in enumerate(hues):
        off = (j - (len(hues) - 1) / 2) * 0.18
        for i, key in enumerate(keys):
            g = summ[(summ[by] == key) & ((summ[hue] == h) if h is not None else True)]
            if not len(g):
                continue
            v = g["steps_to_target"].dropna().astype(float).to_numpy()
            y = i + off
            if len(v) == 0:
                ax.plot(right, y, marker=markers[j % 8], mfc="none", color=color_for(key),
                        ls="none")
                ax.annotate("not reached", (right, y), xytext=(6, -3),
                            textcoords="offset points", fontsize=7, color="0.4")
                continue
            lo, hi = bootstrap_ci(v)
            ax.errorbar(v.mean(), y, xerr=[[v.mean() - lo], [hi - v.mean()]],
                        marker=markers[j % 8], color=color_for(key), capsize=3, ls="none")
            if len(v) < len(g):
                ax.annotate(f"{len(v)}/{len(g)}", (v.mean(), y), xytext=(6, 4),
                            textcoords="offset points", fontsize=7)
    ax.set_yticks(range(len(keys)), [str(k) for k in keys])
    target = summ["target"].dropna().iloc[0] if "target" in summ and summ["target"].notna().any() \
        else "target"
    ax.set(xlabel=f"steps to {target} (mean, 95% bootstrap CI)", xlim=(0, right * 1.25))
    ax.invert_yaxis()
    if hues != [None]:
        handles = [Line2D([], [], marker=markers[j % 8], color="0.35", ls="none",
                          label=f"{hue}={h}") for j, h in enumerate(hues)]
        ax.legend(handles=handles, loc="lower right")
    fig.tight_layout()
    return fig


@_styled
def distributions(captures: Mapping[int, np.ndarray], title: str = "pre-activation z",
                  max_layers: int = 12) -> Figure:
    """Violin plot per layer of a captured quantity ([L, P, W] per step), one panel per step."""
    steps = sorted(captures)
    fig, axes = _subplots(1, len(steps), figsize=(3.6 * len(steps), 3.0), squeeze=False,
                          sharey=True)
    for ax, step in zip(axes[0], steps, strict=True):
        arr = np.asarray(captures[step])
        layers = np.linspace(0, len(arr) - 1, min(len(arr), max_layers)).round().astype(int)
        data = [arr[l].ravel() for l in layers]
        parts = ax.violinplot(data, positions=layers, showextrema=False, widths=0.8)
        for body in parts["bodies"]:
            body.set_alpha(0.6)
        ax.set(title=f"step {step}", xlabel="layer")
    axes[0][0].set_ylabel(title)
    fig.tight_layout()
    return fig


@_styled
def decision_boundary(predict: Callable[[np.ndarray], np.ndarray], x_raw: np.ndarray,
                      y: np.ndarray, mean: np.ndarray, std: np.ndarray, ax=None,
                      title: str = "", resolution: int = 200) -> Figure:
    """Playground-style map of p(class 1) over the input plane with test points overlaid.

    `predict` takes standardised inputs [N, 2] and returns p(class 1) [N].
    """
    fig = ax.figure if ax is not None else _figure(figsize=(3.4, 3.2))
    ax = ax or fig.add_subplot(111)
    pad = 0.5
    lo, hi = x_raw.min(0) - pad, x_raw.max(0) + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    p = np.asarray(predict(((grid - mean) / std).astype(np.float32))).reshape(gx.shape)
    ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.75)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=0.8)
    ax.scatter(x_raw[:, 0], x_raw[:, 1], c=y, cmap="RdBu", vmin=-0.2, vmax=1.2, s=10,
               edgecolors="black", linewidths=0.35)
    ax.set(title=title, xticks=[], yticks=[])
    ax.grid(False)
    ax.set_aspect("equal")
    return fig
