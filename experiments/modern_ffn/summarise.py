"""Summary of the modern_ffn sweep: results.md and the figures beside the README.

    python -m experiments.summarise modern_ffn [SWEEP_DIR ...]    # default: multirun/modern_ffn

Writes results.md (per dataset: parameter count, final test accuracy and loss with 95%
bootstrap intervals, final training loss, steps to the loss target, the end-of-training
gradient norm of each block's FFN, dead fraction and gate opening), final_ci.png (the
intervals side by side), learning_curves.png, grad_norm.png (grad_norm/l over training, one
panel per dataset and block) and dead_gate.png (dead_frac and gate_mean over training).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from actlab import analysis
from actlab.analysis import Paths, plots
from actlab.analysis.plots.style import _subplots, color_for, style
from experiments.common import bootstrap_ci, ci_cell, md, num_params

ORDER = ("gelu", "relu", "relu2", "swiglu", "geglu", "reglu")  # elementwise, then gated
GATED = ("swiglu", "geglu", "reglu")
DATASETS = {"digits": "digits (16 patches of 2x2)", "mnist1d": "MNIST-1D (40 time steps)"}


def last_values(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each member's last record of a per-layer metric: (run, seed) x layer."""
    sel = df[(df["metric"] == metric) & df["layer"].notna()]
    sel = sel[sel["step"] == sel.groupby(["run", "seed"])["step"].transform("max")]
    return sel.pivot_table(index=["run", "seed"], columns="layer", values="value")


def per_layer(vals: pd.DataFrame, runs: list[str], fmt: str) -> str:
    """Mean over a configuration's members, one value per layer joined by ' / '."""
    v = vals[vals.index.get_level_values("run").isin(runs)]
    return " / ".join(format(x, fmt) for x in v.mean().to_numpy()) if len(v) else "-"


def tables(summ: pd.DataFrame, df: pd.DataFrame) -> str:
    """Per dataset, a row per activation: size, accuracy, loss, speed, per-block metrics."""
    gn, dead, gate = (last_values(df, m) for m in ("grad_norm", "dead_frac", "gate_mean"))
    target = summ["target"].dropna().iloc[0]
    parts = []
    for dset, title in DATASETS.items():
        rows = []
        for act in ORDER:
            g = summ[(summ["dataset"] == dset) & (summ["activation"] == act)]
            if not len(g):
                continue
            runs = list(g["run"].unique())
            stt = g["steps_to_target"].dropna()
            rows.append({
                "activation": act,
                "params": num_params(runs[0]),
                "final test acc [95% CI]": ci_cell(g["final_eval_acc"]),
                "final test loss [95% CI]": ci_cell(g["final_eval_loss"]),
                "final train loss": g["final_train_loss"].mean(),
                f"steps to {target} (median, reached)":
                    f"{stt.median():.0f} ({len(stt)}/{len(g)})" if len(stt)
                    else f"- (0/{len(g)})",
                "grad_norm/0 / grad_norm/1 (end)": per_layer(gn, runs, ".3f"),
                "dead_frac/0 / 1 (end)": per_layer(dead, runs, ".3f"),
                "gate_mean/0 / 1 (end)": per_layer(gate, runs, ".3f") if act in GATED else "-",
            })
        if rows:
            parts.append(f"### {title}\n\n" + md(pd.DataFrame(rows).set_index("activation")))
    return "\n\n".join(parts)


def interval_strip(ax, summ: pd.DataFrame, col: str) -> None:
    """A row per activation (ORDER, elementwise above the gated): its members' values of
    `col`, their mean and 95% bootstrap interval."""
    for k, act in enumerate(ORDER):
        v = summ.loc[summ["activation"] == act, col]
        if not len(v):
            continue
        lo, hi = bootstrap_ci(v)
        ax.plot([lo, hi], [k, k], color=color_for(act), lw=2.2)
        ax.plot(v.mean(), k, "o", color=color_for(act), ms=5)
        ax.plot(v, [k] * len(v), "|", color=color_for(act), ms=7, alpha=0.5)
    ax.set_yticks(range(len(ORDER)), ORDER)
    ax.invert_yaxis()
    ax.axhline(2.5, color="0.8", lw=0.8)  # elementwise above, gated below


def final_ci_figure(summ: pd.DataFrame, path: Path) -> None:
    """Per dataset: each activation's final test accuracy and loss, mean and 95% interval."""
    with style():
        fig, axes = _subplots(2, len(DATASETS), figsize=(4.2 * len(DATASETS), 5.2),
                              squeeze=False)
        for j, (dset, title) in enumerate(DATASETS.items()):
            for i, (col, label) in enumerate((("final_eval_acc", "final test accuracy"),
                                              ("final_eval_loss", "final test loss"))):
                ax = axes[i][j]
                interval_strip(ax, summ[summ["dataset"] == dset], col)
                ax.set(xlabel=label, title=title if i == 0 else "")
        fig.tight_layout()
    plots.savefig(fig, path)


def learning_curves_figure(df: pd.DataFrame, path: Path) -> None:
    """train/loss and eval/acc over training (mean over seeds, band: std), a row per dataset."""
    with style():
        fig, axes = _subplots(len(DATASETS), 2, figsize=(9.5, 3.0 * len(DATASETS)),
                              squeeze=False)
        for row, (dset, title) in zip(axes, DATASETS.items(), strict=True):
            for ax, metric in zip(row, ("train/loss", "eval/acc"), strict=True):
                sel = df[(df["dataset"] == dset) & (df["metric"] == metric)]
                for act in ORDER:
                    per_step = sel[sel["activation"] == act].groupby("step")["value"]
                    if not len(sel[sel["activation"] == act]):
                        continue
                    mean, sd = per_step.mean(), per_step.std(ddof=0).fillna(0)
                    ls = "--" if act in GATED else "-"
                    ax.plot(mean.index, mean.values, color=color_for(act), ls=ls, label=act,
                            marker="o" if metric == "eval/acc" else None, ms=3)
                    ax.fill_between(mean.index, mean - sd, mean + sd, color=color_for(act),
                                    alpha=0.15, lw=0)
                ax.set(xlabel="step", ylabel=metric, title=title)
                if metric == "train/loss":
                    ax.set_yscale("log")
        axes[0][1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    plots.savefig(fig, path)


def grad_norm_figure(df: pd.DataFrame, path: Path) -> None:
    """grad_norm/l over training: a panel per (dataset, block), a line per activation."""
    sel = df[(df["metric"] == "grad_norm") & df["layer"].notna()]
    layers = sorted(int(v) for v in sel["layer"].unique())
    with style():
        fig, axes = _subplots(len(DATASETS), len(layers), figsize=(4.0 * len(layers),
                                                                    3.0 * len(DATASETS)),
                              squeeze=False, sharey="row")
        for row, (dset, title) in zip(axes, DATASETS.items(), strict=True):
            for ax, layer in zip(row, layers, strict=True):
                part = sel[(sel["dataset"] == dset) & (sel["layer"] == layer)]
                for act in ORDER:
                    m = part[part["activation"] == act].groupby("step")["value"].mean()
                    if len(m):
                        ax.plot(m.index, m.values, color=color_for(act),
                                ls="--" if act in GATED else "-", label=act)
                ax.set(xlabel="step", ylabel=f"grad_norm/{layer}", yscale="log",
                       title=f"{title}: block {layer} FFN")
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    plots.savefig(fig, path)


def dead_gate_figure(df: pd.DataFrame, path: Path) -> None:
    """dead_frac (mean over blocks) and, for the gated units, gate_mean over training."""
    with style():
        fig, axes = _subplots(len(DATASETS), 2, figsize=(9.5, 3.0 * len(DATASETS)),
                              squeeze=False)
        for row, (dset, title) in zip(axes, DATASETS.items(), strict=True):
            for ax, metric in zip(row, ("dead_frac", "gate_mean"), strict=True):
                sel = df[(df["dataset"] == dset) & (df["metric"] == metric)
                         & df["layer"].notna()]
                for act in ORDER if metric == "dead_frac" else GATED:
                    part = sel[sel["activation"] == act]
                    for layer, g in part.groupby("layer"):
                        m = g.groupby("step")["value"].mean()
                        ax.plot(m.index, m.values, color=color_for(act),
                                ls="-" if int(layer) == 0 else ":",
                                label=f"{act}, block {int(layer)}")
                ax.set(xlabel="step", ylabel=metric, title=title)
                if metric == "dead_frac":
                    ax.set_ylim(-0.01, max(0.05, ax.get_ylim()[1]))
            row[0].legend(fontsize=6, ncol=2)
            row[1].legend(fontsize=7)
        fig.tight_layout()
    plots.savefig(fig, path)


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md's tables; final_ci, learning_curves, grad_norm, dead_gate .png into out_dir."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    counts = summ.groupby("dataset")["run"].apply(lambda r: sorted({num_params(x) for x in r}))
    spread = "; ".join(f"{d}: {min(c)} .. {max(c)} ({100 * (max(c) / min(c) - 1):.2f}%)"
                       for d, c in counts.items())
    final_ci_figure(summ, out_dir / "final_ci.png")
    learning_curves_figure(df, out_dir / "learning_curves.png")
    grad_norm_figure(df, out_dir / "grad_norm.png")
    dead_gate_figure(df, out_dir / "dead_gate.png")
    return tables(summ, df) + f"\n\nParameters per model: {spread}"
