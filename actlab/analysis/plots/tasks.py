"""Figures of task sequences (task=continual): accuracy on each new task and on the first.

Like actlab.analysis.plots, every function returns a Figure built in actlab's style context
and takes the tidy frames of actlab.analysis (load_run, load_sweep).
"""

from __future__ import annotations

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure

from actlab.analysis.plots.style import _styled, _subplots, color_for

__all__ = ["task_accuracy"]

KEYS = ("task_end/task", "task_end/acc", "task_end/first_acc")


def has_tasks(df: pd.DataFrame) -> bool:
    """Whether the frame holds task ends (a run of task=continual)."""
    return bool(((df["metric"] == "task_end/acc") & df["layer"].isna()).any())


@_styled
def task_accuracy(df: pd.DataFrame) -> Figure:
    """Test accuracy on each task when its training ends (solid) and, at the same moment,
    on the first task (dotted: forgetting), over the sequence; one colour per activation,
    one line per run (and vmapped learning rate), the mean over seeds."""
    sel = df[df["metric"].isin(KEYS) & df["layer"].isna()]
    member = ["run", "seed", "step"] + [c for c in ("lr",) if c in sel and sel[c].notna().any()]
    wide = sel.pivot_table(index=member, columns="metric", values="value").reset_index()
    info = sel.drop_duplicates("run").set_index("run")
    fig, axes = _subplots(1, 1, figsize=(6.0, 3.6), squeeze=False)
    ax = axes[0][0]
    runs = wide["run"].nunique()
    groups = list(wide.groupby(["run", "lr"] if len(member) > 3 else ["run"], sort=True))
    acts = [str(info.at[k[0] if isinstance(k, tuple) else k, "activation"])
            for k, _ in groups] if "activation" in info else [""] * len(groups)
    shared = len(set(acts)) < len(acts)  # an activation drawn more than once: a colour per line
    palette = mpl.colormaps["tab10"]
    for i, (key, g) in enumerate(groups):
        run = key[0] if isinstance(key, tuple) else key
        act = str(info.at[run, "activation"]) if "activation" in info else ""
        label = act
        if "plasticity" in info and info.at[run, "plasticity"] not in (None, "none"):
            label += f" + {info.at[run, 'plasticity']}"
        if len(member) > 3:
            label += f" lr={key[1]:g}"
        if runs > 1 and "dataset" in info:
            label += f" ({info.at[run, 'dataset']})"
        mean = g.groupby("task_end/task")[["task_end/acc", "task_end/first_acc"]].mean()
        color = palette(i % 10) if shared else color_for(act)
        ax.plot(mean.index + 1, mean["task_end/acc"], color=color, lw=1.4, label=label)
        ax.plot(mean.index + 1, mean["task_end/first_acc"], ":", color=color, lw=1.0)
    ax.plot([], [], "k-", label="the task just trained")
    ax.plot([], [], "k:", label="the first task")
    ax.set_xlabel("task")
    ax.set_ylabel("test accuracy at the task's end")
    ax.legend(fontsize=7)
    return fig
