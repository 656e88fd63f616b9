"""Summary of the modern_ffn_lm sweep: results.md and the figures beside the README.

    python -m experiments.summarise modern_ffn_lm [SWEEP_DIR ...]  # default: multirun/modern_ffn_lm

Writes results.md (a row per activation: parameter count, final and best held-out bits per
byte with 95% bootstrap intervals, final training loss, steps to the bits-per-byte target,
and at the end of training each block's FFN sparsity, lazy-neuron fraction, outlier
kurtosis, massive-activation ratio and attention entropy), final_ci.png (the intervals side
by side), val_curves.png (eval/bpb and train/loss over training) and sparsity_kurtosis.png
(ffn_sparsity, ffn_lazy, outlier_kurtosis and massive_ratio over training).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from actlab import analysis
from actlab.analysis import Paths, plots
from actlab.analysis.plots.style import _subplots, color_for, style
from experiments.common import ci_cell, md, num_params
from experiments.modern_ffn.summarise import GATED, ORDER, interval_strip, last_values, per_layer

PER_BLOCK = (("ffn_sparsity", ".3f"), ("ffn_lazy", ".3f"), ("outlier_kurtosis", ".2f"),
             ("massive_ratio", ".1f"), ("attn_entropy", ".2f"))


def tables(summ: pd.DataFrame, df: pd.DataFrame) -> str:
    """A row per activation: size, bits per byte, speed and the per-block measurements."""
    ends = {m: last_values(df, m) for m, _ in PER_BLOCK}
    target = summ["target"].dropna().iloc[0]
    rows = []
    for act in ORDER:
        g = summ[summ["activation"] == act]
        if not len(g):
            continue
        runs = list(g["run"].unique())
        stt = g["steps_to_target"].dropna()
        rows.append({
            "activation": act,
            "params": num_params(runs[0]),
            "final eval bpb [95% CI]": ci_cell(g["final_eval_bpb"]),
            "best eval bpb": g["best_eval_bpb"].mean(),
            "final train loss (nats)": g["final_train_loss"].mean(),
            f"steps to {target} (median, reached)":
                f"{stt.median():.0f} ({len(stt)}/{len(g)})" if len(stt) else f"- (0/{len(g)})",
            **{f"{m} 0 / 1 (end)": per_layer(ends[m], runs, fmt) for m, fmt in PER_BLOCK},
        })
    return md(pd.DataFrame(rows).set_index("activation"))


def final_ci_figure(summ: pd.DataFrame, path: Path) -> None:
    """Each activation's final held-out bits per byte: members, mean and 95% interval."""
    with style():
        fig, axes = _subplots(1, 1, figsize=(5.0, 3.0), squeeze=False)
        ax = axes[0][0]
        interval_strip(ax, summ, "final_eval_bpb")
        ax.set(xlabel="final held-out bits per byte (lower is better)")
        fig.tight_layout()
    plots.savefig(fig, path)


def _curves(ax, df: pd.DataFrame, metric: str, acts=ORDER, layer: int | None = None) -> None:
    """Mean over members (band: std) of one metric (one block's if `layer`) per activation."""
    sel = df[df["metric"] == metric]
    if layer is not None:
        sel = sel[sel["layer"] == layer]
    for act in acts:
        part = sel[sel["activation"] == act]
        if not len(part):
            continue
        per_step = part.groupby("step")["value"]
        mean, sd = per_step.mean(), per_step.std(ddof=0).fillna(0)
        ax.plot(mean.index, mean.values, color=color_for(act),
                ls="--" if act in GATED else "-", label=act)
        ax.fill_between(mean.index, mean - sd, mean + sd, color=color_for(act), alpha=0.15,
                        lw=0)


def val_curves_figure(df: pd.DataFrame, path: Path) -> None:
    """Held-out bits per byte and the training loss over training, a line per activation."""
    with style():
        fig, axes = _subplots(1, 2, figsize=(9.5, 3.2), squeeze=False)
        for ax, (metric, label) in zip(axes[0], (("eval/bpb", "held-out bits per byte"),
                                                 ("train/loss", "training loss (nats)")),
                                       strict=True):
            _curves(ax, df[df["step"] > 0], metric)
            ax.set(xlabel="step", ylabel=label)
        axes[0][1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    plots.savefig(fig, path)


def sparsity_kurtosis_figure(df: pd.DataFrame, path: Path) -> None:
    """ffn_sparsity, ffn_lazy, outlier_kurtosis and massive_ratio over training, per block."""
    metrics = ("ffn_sparsity", "ffn_lazy", "outlier_kurtosis", "massive_ratio")
    layers = sorted(int(v) for v in df.loc[df["metric"] == "ffn_sparsity", "layer"].dropna()
                    .unique())
    with style():
        fig, axes = _subplots(len(layers), len(metrics), figsize=(3.4 * len(metrics),
                                                                 2.8 * len(layers)),
                              squeeze=False)
        for row, layer in zip(axes, layers, strict=True):
            for ax, metric in zip(row, metrics, strict=True):
                _curves(ax, df, metric, layer=layer)
                ax.set(xlabel="step", ylabel=f"{metric}/{layer}", title=f"block {layer}")
                if metric in ("outlier_kurtosis", "massive_ratio"):
                    ax.set_yscale("log")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
    plots.savefig(fig, path)


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md's table; final_ci, val_curves, sparsity_kurtosis .png into out_dir."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    counts = sorted({num_params(r) for r in summ["run"].unique()})
    final_ci_figure(summ, out_dir / "final_ci.png")
    val_curves_figure(df, out_dir / "val_curves.png")
    sparsity_kurtosis_figure(df, out_dir / "sparsity_kurtosis.png")
    return (tables(summ, df) + f"\n\nParameters per model: {min(counts)} .. {max(counts)} "
            f"({100 * (max(counts) / min(counts) - 1):.2f}%)")
