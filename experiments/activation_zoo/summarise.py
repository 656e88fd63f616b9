"""Summary of the activation_zoo sweep: activations ranked per setting with 95% intervals.

Writes ranking.png (a forest plot per dataset and model) and actlab-report's figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import (
    at_last_step,
    bootstrap_ci,
    ci_cell,
    md,
    per_run_cost,
    report_figures,
)


def final_layer_means(sweep: Paths, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Each member's last record of each metric, averaged over hidden layers: (run, seed) rows."""
    df = analysis.load_sweep(sweep)
    sel = at_last_step(df[df["metric"].isin(metrics) & df["layer"].notna()])
    return sel.groupby(["run", "seed", "metric"])["value"].mean().unstack("metric").reset_index()


def forest_plot(panels: list[tuple[str, pd.DataFrame, list[str]]], path: Path) -> None:
    """One panel per setting: each activation's mean test accuracy with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 6.5), sharey=False)
    for ax, (title, g, order) in zip(np.atleast_1d(axs), panels, strict=True):
        for i, act in enumerate(order):
            v = g.loc[g["activation"] == act, "final_eval_acc"]
            lo, hi = bootstrap_ci(v)
            ax.plot([lo, hi], [i, i], color="tab:blue", lw=2)
            ax.plot(v.mean(), i, "o", color="tab:blue", ms=4)
        ax.set_yticks(range(len(order)), order, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("final test accuracy")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: per (dataset, model), activations ranked by final test accuracy."""
    summ = analysis.summaries(sweep)
    summ["ms_per_step"] = per_run_cost(summ)
    summ = summ.merge(final_layer_means(sweep, ("dead_frac", "sat_frac")), on=["run", "seed"])
    parts, panels = [], []
    for (dset, model), g in summ.groupby(["dataset", "model"]):
        rows = []
        for act, a in g.groupby("activation"):
            stt = a["steps_to_target"].dropna()
            rows.append({"activation": act, "acc": a["final_eval_acc"].mean(),
                         "final test acc [95% CI]": ci_cell(a["final_eval_acc"]),
                         "steps to loss 0.5 (median)":
                             f"{stt.median():.0f} ({len(stt)}/{len(a)})" if len(stt)
                             else f"- (0/{len(a)})",
                         "dead_frac": a["dead_frac"].mean(), "sat_frac": a["sat_frac"].mean(),
                         "ms/step": a["ms_per_step"].mean()})
        t = pd.DataFrame(rows).sort_values("acc", ascending=False).reset_index(drop=True)
        t.insert(0, "rank", np.arange(1, len(t) + 1))
        panels.append((f"{dset}, {model}", g, t["activation"].tolist()))
        parts.append(f"### {dset}, {model}\n\n" + md(t.drop(columns="acc").set_index("rank")))
    forest_plot(panels, out_dir / "ranking.png")
    report_figures(sweep, out_dir)
    return "\n\n".join(parts)
