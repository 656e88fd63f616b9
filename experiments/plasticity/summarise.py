"""Summary of the plasticity sweep: results.md and the figures beside the README.

    python -m experiments.summarise plasticity [SWEEP_DIR ...]    # default: multirun/plasticity

Per dataset and learning rate, a row per activation and method: accuracy on the first tasks
and on the last 10% of them (each task's test accuracy when its training ends, mean over
members with a 95% bootstrap interval), its slope per task, and at the end of the run the
dormant fraction, effective rank and weight magnitude (means over hidden layers).
new_task_acc.png: accuracy on each new task over the sequence; representation.png: dormant
fraction, effective rank and weight magnitude over training (plain backprop solid,
continual backpropagation dashed).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from actlab.analysis.plots.style import _subplots, color_for, style
from actlab.files import METRICS_FILE, SUMMARY_FILE, read_metrics
from experiments.common import bootstrap_ci, md

ORDER = ("relu", "leaky_relu", "tanh", "gelu", "swish", "crelu")
METHODS = {"none": "backprop", "cbp": "continual backprop"}
FIRST = 5  # tasks averaged as "the first tasks"
LAYER_MEANS = ("dormant_frac", "erank", "weight_mag")


def members(sweep: Paths) -> pd.DataFrame:
    """One row per run member: dataset, activation, method, lr, seed, task accuracies, and
    the per-layer means of LAYER_MEANS at every record (dict step -> value)."""
    rows = []
    for run in analysis.run_dirs(sweep):
        s = json.loads((run / SUMMARY_FILE).read_text())
        cfg = s["config"]
        series: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        for r in read_metrics(run / METRICS_FILE)[0]:
            key = (r["seed"], r.get("optimizer.lr", cfg["optimizer"]["lr"]))
            for m in LAYER_MEANS:
                vals = [v for k, v in r.items() if k.startswith(f"{m}/") and v is not None]
                if vals:
                    series[key][m][r["step"]] = float(np.mean(vals))
        for m in s["seeds"]:
            lr = m.get("optimizer.lr", cfg["optimizer"]["lr"])
            rows.append({"dataset": cfg["dataset"]["name"], "activation": cfg["activation"]["name"],
                         "method": cfg["plasticity"]["method"], "lr": lr, "seed": m["seed"],
                         "task_acc": m.get("task_acc") or [],
                         "slope": m.get("task_acc_slope"), "last10": m.get("task_acc_last10"),
                         "diverged": m.get("diverged_at") is not None,
                         "steps_per_task": cfg["task"]["steps_per_task"],
                         **{k: dict(v) for k, v in series[(m["seed"], lr)].items()}})
    return pd.DataFrame(rows)


def _ci(values: Any, digits: int = 3) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "-"
    lo, hi = bootstrap_ci(v)
    return f"{np.mean(v):.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _end(series: dict[int, float]) -> float:
    return series[max(series)] if series else np.nan


def tables(df: pd.DataFrame) -> str:
    parts = []
    for (dset, lr), g in df.groupby(["dataset", "lr"]):
        rows = []
        for act in ORDER:
            for method, label in METHODS.items():
                c = g[(g["activation"] == act) & (g["method"] == method)]
                if not len(c):
                    continue
                rows.append({
                    "activation": act, "method": label,
                    f"acc, tasks 1-{FIRST} [95% CI]": _ci(np.mean(a[:FIRST])
                                                          for a in c["task_acc"]),
                    "acc, last 10% of tasks [95% CI]": _ci(c["last10"]),
                    "slope per task (x1e3)": f"{1e3 * np.mean(c['slope'].dropna()):+.2f}",
                    **{f"{m} (end)": f"{np.mean([_end(s) for s in c[m]]):.3g}"
                       for m in LAYER_MEANS if m in c},
                })
        parts.append(f"### {dset}, Adam lr {lr:g}\n\n" + md(pd.DataFrame(rows)
                                                           .set_index(["activation", "method"])))
    return "\n\n".join(parts)


def _panels(df: pd.DataFrame) -> list[tuple[str, float]]:
    return sorted({(d, lr) for d, lr in zip(df["dataset"], df["lr"], strict=True)})


def new_task_figure(df: pd.DataFrame, path: Path) -> None:
    """Accuracy on each new task (mean over members, 95% band), one panel per dataset x lr."""
    panels = _panels(df)
    with style():
        fig, axes = _subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False,
                              sharey=True)
        for ax, (dset, lr) in zip(axes[0], panels, strict=True):
            g = df[(df["dataset"] == dset) & (df["lr"] == lr)]
            for act in ORDER:
                for method, ls in (("none", "-"), ("cbp", "--")):
                    c = g[(g["activation"] == act) & (g["method"] == method)]
                    if not len(c):
                        continue
                    a = np.asarray([x for x in c["task_acc"] if len(x)], float)
                    if not a.size:
                        continue
                    t = np.arange(1, a.shape[1] + 1)
                    ax.plot(t, a.mean(0), ls, color=color_for(act), lw=1.3,
                            label=f"{act}" if method == "none" else None)
                    if len(a) > 1:
                        band = np.asarray([bootstrap_ci(a[:, j]) for j in range(a.shape[1])])
                        ax.fill_between(t, band[:, 0], band[:, 1], color=color_for(act),
                                        alpha=0.12, lw=0)
            ax.set_title(f"{dset}, Adam lr {lr:g}")
            ax.set_xlabel("task")
        axes[0][0].set_ylabel("test accuracy at the task's end")
        axes[0][0].plot([], [], "k-", label="backprop")
        axes[0][0].plot([], [], "k--", label="continual backprop")
        axes[0][0].legend(fontsize=7, loc="lower left", ncol=2)  # the panel with room below
        fig.savefig(path, dpi=110)


def representation_figure(df: pd.DataFrame, path: Path) -> None:
    """Dormant fraction, effective rank and weight magnitude (means over hidden layers and
    members) over tasks: rows the measurement, columns dataset x lr."""
    panels = _panels(df)
    labels = {"dormant_frac": "dormant fraction", "erank": "effective rank",
              "weight_mag": "mean |w|"}
    with style():
        fig, axes = _subplots(len(LAYER_MEANS), len(panels),
                              figsize=(4.4 * len(panels), 2.6 * len(LAYER_MEANS)),
                              squeeze=False, sharex=True)
        for j, (dset, lr) in enumerate(panels):
            g = df[(df["dataset"] == dset) & (df["lr"] == lr)]
            spt = g["steps_per_task"].iloc[0]
            for i, m in enumerate(LAYER_MEANS):
                ax = axes[i][j]
                for act in ORDER:
                    for method, ls in (("none", "-"), ("cbp", "--")):
                        c = g[(g["activation"] == act) & (g["method"] == method)]
                        if not len(c) or m not in c:
                            continue
                        frame = pd.DataFrame(list(c[m])).mean()
                        ax.plot(frame.index / spt, frame.to_numpy(), ls, color=color_for(act),
                                lw=1.1, label=act if (method == "none" and i == 0) else None)
                if j == 0:
                    ax.set_ylabel(labels[m])
                if i == 0:
                    ax.set_title(f"{dset}, Adam lr {lr:g}")
                if i == len(LAYER_MEANS) - 1:
                    ax.set_xlabel("task")
        axes[0][0].legend(fontsize=7)
        fig.savefig(path, dpi=110)


def summarise(sweep: Paths, out_dir: Path) -> str:
    df = members(sweep)
    new_task_figure(df, out_dir / "new_task_acc.png")
    representation_figure(df, out_dir / "representation.png")
    n = df.groupby(["dataset", "activation", "method", "lr"]).size()
    diverged = int(df["diverged"].sum())
    return (f"{len(df)} members ({n.min()}-{n.max()} seeds per configuration; "
            f"{diverged} diverged). Accuracy: each task's test accuracy when its training "
            "ends (task_end/acc).\n\n" + tables(df))
