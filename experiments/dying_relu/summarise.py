"""Summary of the dying_relu sweep: final dead fraction and accuracy by learning rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: final dead_frac (diverged members counted) and test accuracy, per lr."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    dead = df[df["metric"] == "dead_frac"]
    # each member's last record: a member that diverged stops at its divergence
    ends = dead.groupby(["run", "seed", "optimizer.lr"])["step"].transform("max")
    last = dead[dead["step"] == ends]
    t = last.groupby(["activation", "depth", "optimizer.lr"])["value"].mean().unstack(
        "optimizer.lr")
    div = summ.assign(d=summ["diverged_at"].notna()).groupby(
        ["activation", "depth", "lr"])["d"].sum().unstack("lr")
    t = t.round(3).astype(str) + np.where(div.values > 0, " (diverged " + div.astype(int)
                                          .astype(str) + ")", "")
    acc = summ.groupby(["activation", "depth", "lr"])["final_eval_acc"].mean().unstack("lr")
    report_figures(sweep, out_dir)
    return ("final dead_frac (mean over layers and seeds), by learning rate:\n\n"
            + md(t) + "\n\nfinal test accuracy:\n\n"
            + md(acc.round(3)))
