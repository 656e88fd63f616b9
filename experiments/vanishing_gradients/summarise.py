"""Summary of the vanishing_gradients sweep: grad_norm ratios at init, accuracy, report figures."""

from __future__ import annotations

from pathlib import Path

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import layer_ratio, md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: grad_norm/1 over the last at init and test accuracy, per activation x depth."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    r0 = layer_ratio(df, 0).merge(summ[["run", "seed", "activation", "depth"]],
                                  on=["run", "seed"])
    t = r0.groupby(["activation", "depth"])["ratio"].median().unstack("depth")
    acc = summ.groupby(["activation", "depth"])["final_eval_acc"].mean().unstack("depth")
    report_figures(sweep, out_dir)
    return ("grad_norm/1 / grad_norm/last at initialisation (median over seeds):\n\n"
            + md(t.map(lambda v: f"{v:.2e}")) + "\n\nfinal test accuracy "
            "(mean over seeds):\n\n" + md(acc.round(3)))
