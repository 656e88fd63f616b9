"""Width scaling (model.param): the coordinate check and learning-rate transfer across width.

- The coordinate check (microsoft/mup's coord_check): for each layer, the RMS of its
  pre-activations sqrt(q/l), of the output logits (logits_rms) and, in attention models, of
  each block's attention logits (attn_logits_rms/l), against the width on log-log axes, one
  line per logged step. Under a parametrization that keeps activations of constant size as
  width grows (mup) the lines are flat; `coord_table` fits the slope of log RMS on log
  width per panel and step.
- Learning-rate transfer: the final training loss against the learning rate for each width
  (vmapped optimizer.lr members of a width multirun), mean over seeds, the optimum marked;
  `transfer_table` holds the optimal learning rate per width and its ratio to the narrowest
  width's.

The width of a run is model.width (MLP) or model.dim (Transformer). Like the other figures
of actlab.analysis.plots, every function takes the tidy frames of actlab.analysis.
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from actlab.analysis.plots.style import _styled, _subplots

__all__ = ["coord_check", "coord_table", "has_widths", "lr_transfer", "transfer_table"]

GROUP = ("model", "param", "activation")  # one parametrization of one network per row
MAX_STEPS = 6  # lines per coordinate-check panel: the first logged steps every width shares
MAX_ROWS = 8


def _with_width(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a `n` column: the run's width (model.width, else model.dim), and every
    GROUP column present (a run from before model.param is sp)."""
    out = frame.copy()
    width = out["width"] if "width" in out else pd.Series(np.nan, index=out.index)
    dim = out["dim"] if "dim" in out else pd.Series(np.nan, index=out.index)
    out["n"] = pd.to_numeric(width.where(width.notna(), dim), errors="coerce")
    for col, default in (("model", "mlp"), ("param", "sp"), ("activation", "")):
        out[col] = out[col].fillna(default) if col in out else default
    return out[out["n"].notna()]


def has_widths(frame: pd.DataFrame) -> bool:
    """Whether some network of the frame was run at two widths or more."""
    f = _with_width(frame)
    return bool(len(f)) and bool((f.groupby(list(GROUP))["n"].nunique() > 1).any())


def _panel(metric: str, layer: Any) -> str:
    if metric == "logits_rms":
        return "logits"
    return f"{'attention' if metric == 'attn_logits_rms' else 'layer'} {int(layer)}"


def coord_table(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, slopes) of the coordinate check.

    values: one row per (GROUP, n, panel, step): the RMS, mean over seeds (and over the
    learning rates of one member each when several are vmapped: the one nearest the grid's
    geometric middle is kept). slopes: one row per (GROUP, panel, step) with ≥ 2 widths:
    `slope`, the least-squares slope of log RMS on log width.
    """
    rows = df[((df["metric"] == "q") & df["layer"].notna())
              | ((df["metric"] == "attn_logits_rms") & df["layer"].notna())
              | ((df["metric"] == "logits_rms") & df["layer"].isna())]
    rows = _with_width(rows)
    if "lr" in rows and rows["lr"].nunique() > 1:  # one learning rate: the grid's middle one
        lrs = np.sort(rows["lr"].dropna().unique())
        mid = lrs[np.argmin(np.abs(np.log(lrs) - np.log(lrs).mean()))]
        rows = rows[np.isclose(rows["lr"], mid)]
    rows = rows.assign(value=np.where(rows["metric"] == "q", np.sqrt(rows["value"]),
                                      rows["value"]),
                       panel=[_panel(m, lyr) for m, lyr in zip(rows["metric"], rows["layer"],
                                                               strict=True)])
    values = rows.groupby([*GROUP, "n", "panel", "step"], as_index=False)["value"].mean()
    kept = []
    for _, g in values.groupby(list(GROUP)):
        per_width = g.groupby("n")["step"].apply(set)
        common = sorted(set.intersection(*per_width))[:MAX_STEPS]
        kept.append(g[g["step"].isin(common)])
    values = pd.concat(kept) if kept else values.iloc[:0]
    slopes = []
    for key, g in values.groupby([*GROUP, "panel", "step"]):
        g = g[g["value"] > 0]
        if g["n"].nunique() >= 2:
            slope = np.polyfit(np.log(g["n"]), np.log(g["value"]), 1)[0]
            slopes.append({**dict(zip((*GROUP, "panel", "step"), key, strict=True)),
                           "slope": float(slope), "widths": int(g["n"].nunique())})
    return values.reset_index(drop=True), pd.DataFrame(slopes)


def panel_order(name: str) -> tuple[int, int]:
    kind, _, idx = name.partition(" ")
    return ({"layer": 0, "attention": 1, "logits": 2}[kind], int(idx) if idx else 0)


@_styled
def coord_check(df: pd.DataFrame) -> Figure:
    """The coordinate check: a row per (model, param, activation), a panel per layer (then
    the attention logits and the output logits), RMS against width (log-log), one line per
    logged step (dark: early, light: late); each panel's title holds the fitted slope at the
    last step drawn."""
    values, slopes = coord_table(df)
    groups = [(k, g) for k, g in values.groupby(list(GROUP)) if g["n"].nunique() > 1]
    groups = groups[:MAX_ROWS]
    panels = sorted({p for _, g in groups for p in g["panel"]}, key=panel_order)
    fig, axes = _subplots(max(len(groups), 1), max(len(panels), 1),
                          figsize=(2.6 * max(len(panels), 1) + 0.8, 2.6 * max(len(groups), 1)),
                          squeeze=False)
    cmap = mpl.colormaps["viridis"]
    for i, (key, g) in enumerate(groups):
        steps = sorted(g["step"].unique())
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            sel = g[g["panel"] == panel]
            if sel.empty:
                ax.set_visible(False)
                continue
            for k, t in enumerate(steps):
                line = sel[sel["step"] == t].sort_values("n")
                ax.plot(line["n"], line["value"], "o-", ms=3, lw=1.2,
                        color=cmap(0.85 * k / max(len(steps) - 1, 1)), label=f"step {t:g}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            # at least a decade shown, centred on the data: flat lines look flat
            lo, hi = float(sel["value"].min()), float(sel["value"].max())
            mid, half = np.sqrt(lo * hi), np.sqrt(max(hi / lo, 10.0)) * 1.15
            ax.set_ylim(mid / half, mid * half)
            s = slopes[(slopes["panel"] == panel) & (slopes["step"] == steps[-1])
                       & np.logical_and.reduce([slopes[c] == v for c, v in zip(GROUP, key,
                                                                              strict=True)])]
            slope = f", slope {s['slope'].iat[0]:+.2f}" if len(s) else ""
            ax.set_title(f"{panel}{slope}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{key[1]} {key[2]} ({key[0]})\nRMS", fontsize=8)
            if i == len(groups) - 1:
                ax.set_xlabel("width")
    if groups:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=7)
        fig.subplots_adjust(right=1 - 0.8 / fig.get_figwidth(), hspace=0.45)
    return fig


def transfer_table(summ: pd.DataFrame, loss: str = "final_train_loss") -> pd.DataFrame:
    """The optimal learning rate per (GROUP, width): one row each with best_lr, best_loss
    (mean over seeds of `loss`; diverged or non-finite members never win), lr_ratio (best_lr
    over the narrowest width's) and lrs (the grid's size)."""
    f = _with_width(summ)
    if "lr" not in f or loss not in f:
        return pd.DataFrame()
    f = f.assign(loss=pd.to_numeric(f[loss], errors="coerce"))
    f.loc[~np.isfinite(f["loss"]), "loss"] = np.inf
    mean = f.groupby([*GROUP, "n", "lr"], as_index=False)["loss"].mean()
    rows = []
    for key, g in mean.groupby(list(GROUP)):
        if g["n"].nunique() < 2 or g["lr"].nunique() < 3:
            continue
        best = {}
        for n, gw in g.groupby("n"):
            finite = gw[np.isfinite(gw["loss"])]
            best[n] = (finite.loc[finite["loss"].idxmin()] if len(finite) else None,
                       gw["lr"].nunique())
        narrow = best[min(best)][0]
        for n, (b, count) in sorted(best.items()):
            rows.append({**dict(zip(GROUP, key, strict=True)), "width": int(n),
                         "best_lr": np.nan if b is None else float(b["lr"]),
                         "best_loss": np.nan if b is None else float(b["loss"]),
                         "lr_ratio": (np.nan if b is None or narrow is None
                                      else float(b["lr"] / narrow["lr"])), "lrs": count})
    return pd.DataFrame(rows)


@_styled
def lr_transfer(summ: pd.DataFrame, loss: str = "final_train_loss") -> Figure:
    """Final loss against learning rate, a line per width (dark: narrow, light: wide), the
    optimum of each width starred; a panel per (model, param, activation)."""
    f = _with_width(summ)
    f = f.assign(loss=pd.to_numeric(f[loss], errors="coerce"))
    mean = f.groupby([*GROUP, "n", "lr"], as_index=False)["loss"].mean()
    table = transfer_table(summ, loss)
    keys = list(dict.fromkeys(tuple(r) for r in table[list(GROUP)].itertuples(index=False)))
    cols = min(4, max(len(keys), 1))
    nrows = int(np.ceil(max(len(keys), 1) / cols))
    fig, axes = _subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
    cmap = mpl.colormaps["viridis"]
    for ax, key in zip(axes.flat, keys, strict=False):
        g = mean[np.logical_and.reduce([mean[c] == v for c, v in zip(GROUP, key, strict=True)])]
        widths = sorted(g["n"].unique())
        finite = g.loc[np.isfinite(g["loss"]), "loss"]
        for k, n in enumerate(widths):
            line = g[g["n"] == n].sort_values("lr")
            color = cmap(0.85 * k / max(len(widths) - 1, 1))
            ax.plot(line["lr"], line["loss"].where(np.isfinite(line["loss"])), "o-", ms=2.5,
                    lw=1.2, color=color, label=f"width {n:g}")
            best = table[(table["width"] == n) & np.logical_and.reduce(
                [table[c] == v for c, v in zip(GROUP, key, strict=True)])]
            if len(best) and np.isfinite(best["best_lr"].iat[0]):
                ax.plot(best["best_lr"].iat[0], best["best_loss"].iat[0], "*", ms=10,
                        color=color, mec="k", mew=0.5)
        ax.set_xscale("log")
        if len(finite):  # diverged rates would stretch the axis: clip, every optimum in view
            lo, hi = float(finite.min()), float(finite.max())
            stars = table.loc[np.logical_and.reduce(
                [table[c] == v for c, v in zip(GROUP, key, strict=True)]), "best_loss"]
            top = max(3 * lo + 0.1, 1.25 * float(np.nanmax(stars, initial=lo)))
            ax.set_ylim(lo - 0.05 * abs(lo), min(hi, top) + 0.05)
        ax.set_title(f"{key[1]} {key[2]} ({key[0]})", fontsize=9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel(loss.replace("_", " "))
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def report_items(df: pd.DataFrame,
                 summ: pd.DataFrame) -> list[tuple[str, str, Figure, pd.DataFrame]]:
    """actlab-report's width section: (title, file name, figure, its table) for the
    coordinate check and the learning-rate transfer, where the runs span two widths."""
    if not has_widths(summ):
        return []
    items = []
    _, slopes = coord_table(df)
    if len(slopes):
        items.append(("Coordinate check: RMS of each layer's pre-activations, the attention "
                      "and output logits against width, a line per step (slope: log-log fit "
                      "at the last step)", "coord_check.png", coord_check(df), slopes))
    table = transfer_table(summ)
    if len(table):
        items.append(("Learning-rate transfer: final training loss against learning rate per "
                      "width (star: the optimum; lr_ratio: optimum over the narrowest "
                      "width's)", "lr_transfer.png", lr_transfer(summ), table))
    return items
