"""Summary of the normalisation sweep: gradient ratio at init, accuracy, steps to target."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import layer_ratio, md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: per activation x norm, grad_norm/1 over the last at init, acc, speed."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    r0 = layer_ratio(df, 0).merge(summ[["run", "seed", "activation", "norm"]],
                                  on=["run", "seed"])
    t = r0.groupby(["activation", "norm"])["ratio"].median().map(lambda v: f"{v:.2e}")
    g = summ.groupby(["activation", "norm"])
    out = pd.DataFrame({"grad_norm/1 / grad_norm/last at init": t,
                        "final test acc": g["final_eval_acc"].mean().round(3),
                        "steps to 90% (median)": g["steps_to_target"].median()})
    report_figures(sweep, out_dir)
    return md(out)
