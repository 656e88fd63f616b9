"""Summary of the playground sweep: best losses and seeds reaching the exercise's goal."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: per dataset x activation, best test and train loss, seeds below 0.2."""
    summ = analysis.summaries(sweep)
    g = summ.groupby(["dataset", "activation"])
    t = pd.DataFrame({
        "best test loss": g["final_eval_loss"].min(),
        "best train loss": g["final_train_loss"].min(),
        "seeds below 0.2 (test)": g["final_eval_loss"].apply(lambda v: int((v < 0.2).sum())),
        "seeds": g.size()})
    report_figures(sweep, out_dir)
    return md(t.round(3))
