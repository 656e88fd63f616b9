"""Summary of the recommender sweep: test RMSE in stars, dead units, the mean-rating baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: per activation, final test RMSE and dead_frac/l; the baseline's RMSE."""
    from actlab import data

    df = analysis.load_sweep(sweep)
    ev = df[df["metric"] == "eval/rmse"]
    last = ev[ev["step"] == ev["step"].max()]
    rmse = last.groupby("activation")["value"].agg(["mean", "std"]).round(4)
    dead = df[(df["metric"] == "dead_frac") & (df["step"] == df["step"].max())]
    dead = dead.groupby(["activation", "layer"])["value"].mean().unstack("layer").round(3)
    dead.columns = [f"dead_frac/{int(c)}" for c in dead.columns]
    ds = data.load("ratings")
    base = float(np.sqrt(np.mean((ds.y_test - ds.y_train.mean()) ** 2)) * ds.meta["scale"])
    report_figures(sweep, out_dir)
    return (md(rmse.rename(columns={"mean": "test RMSE (stars)", "std": "std over seeds"})
               .join(dead)) + f"\n\nBaseline (predict the mean training rating): "
            f"RMSE {base:.4f}")
