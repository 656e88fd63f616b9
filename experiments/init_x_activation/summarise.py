"""Summary of the init_x_activation sweep: forward signal at depth 30 at init, accuracy."""

from __future__ import annotations

from pathlib import Path

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: act_std of the last layer over the first at init, test acc, per pair."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    s0 = df[(df["metric"] == "act_std") & (df["step"] == 0)]
    piv = s0.groupby(["run", "layer"])["value"].mean().unstack("layer")
    ratio = (piv.iloc[:, -1] / piv.iloc[:, 0]).rename("act_std/29 / act_std/0 at init")
    meta = summ[["run", "activation", "init"]].drop_duplicates().set_index("run")
    t = meta.join(ratio).groupby(["activation", "init"]).first()
    acc = summ.groupby(["activation", "init"])["final_eval_acc"].mean().rename(
        "final test acc")
    report_figures(sweep, out_dir)
    return md(t.join(acc).map(lambda v: f"{v:.3g}"))
