"""Summary of the output_heads sweep: accuracy, ECE and probability sums of replayed models."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import md, report_figures


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: per dataset x head, from each member's final model replayed on the test set."""
    from actlab.config import Config
    from actlab.runs import retrain

    rows = []
    for run in analysis.run_dirs(sweep):
        cfg = Config.from_dict(json.loads((run / "summary.json").read_text())["config"])
        exp, snaps = retrain.retrain(cfg, [cfg.train.steps])
        for i in range(len(exp.members)):
            out = retrain.forward(exp, snaps[cfg.train.steps], exp.dataset.x_test, member=i)
            p, y = out["probs"], exp.dataset.y_test
            rows.append({"dataset": cfg.dataset.name, "head": cfg.model.head,
                         "acc": float((p.argmax(1) == y).mean()),
                         "ECE": analysis.expected_calibration_error(p, y),
                         "sum of probs: mean": float(p.sum(1).mean()),
                         "sum of probs: std": float(p.sum(1).std())})
    t = pd.DataFrame(rows).groupby(["dataset", "head"]).mean().round(4)
    report_figures(sweep, out_dir)
    return md(t)
