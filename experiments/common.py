"""What the studies' summaries share: the markdown table, interval cells, per-layer ratios,
run costs and actlab-report's figures.

A study's summary is a `Summary`: `summarise(sweep, out_dir) -> str` in
experiments/<study>/summarise.py, listed in experiments.registry. It writes its figures
into out_dir and returns the markdown of results.md.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from actlab.analysis import Paths, report
from actlab.errors import UserError
from actlab.runs.records import bootstrap_ci

__all__ = ["REPORT_FIGURES", "StudyError", "Summary", "at_last_step", "bootstrap_ci",
           "ci_cell", "layer_ratio", "md", "num_params", "one_sweep", "per_run_cost",
           "report_figures"]

Summary = Callable[[Paths, Path], str]  # (sweep dir or dirs, folder for figures) -> results.md

# actlab-report's figures that the READMEs of the plain studies show
REPORT_FIGURES = ("grad_norm_init.png", "dead_saturated.png", "convergence.png",
                  "learning_curves.png")


class StudyError(UserError):
    """A study or sweep the summaries cannot use (an unknown name, too many sweeps): one line."""


def md(df: pd.DataFrame, fmt: str = ".4g") -> str:
    """A DataFrame as a markdown table (index levels first; floats as `fmt`)."""
    df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)

    def cell(v: object) -> str:
        return f"{v:{fmt}}" if isinstance(v, float | np.floating) else str(v)

    rows = ["| " + " | ".join(map(cell, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def ci_cell(v: pd.Series, digits: int = 3) -> str:
    """The mean of `v` with its 95% bootstrap interval: 'mean [lo, hi]'."""
    lo, hi = bootstrap_ci(v)
    return f"{v.mean():.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def layer_ratio(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """grad_norm of hidden layer 1 (the first of shape width x width) over the last."""
    g = df[(df["metric"] == "grad_norm") & (df["step"] == step) & df["layer"].notna()]
    out = []
    for (run, seed), grp in g.groupby(["run", "seed"]):
        grp = grp.sort_values("layer")
        out.append({"run": run, "seed": seed,
                    "ratio": grp["value"].iloc[1] / grp["value"].iloc[-1]})
    return pd.DataFrame(out)


def at_last_step(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last logged step."""
    return df[df["step"] == df.groupby("run")["step"].transform("max")]


def num_params(run: str | os.PathLike) -> int:
    """The parameter count of one member of a run (its summary.json)."""
    return int(json.loads((Path(run) / "summary.json").read_text())["num_params"])


def per_run_cost(summ: pd.DataFrame) -> pd.Series:
    """Milliseconds of training (compilation excluded) per step, all members together."""
    ms = {}
    for run in summ["run"].unique():
        s = json.loads((Path(run) / "summary.json").read_text())
        ms[run] = 1e3 * s["train_seconds"] / s["config"]["train"]["steps"]
    return summ["run"].map(ms)


def one_sweep(sweep: Paths) -> Path:
    """The single directory in `sweep` (a path, or a list of one); StudyError for several."""
    if isinstance(sweep, str | os.PathLike):
        return Path(sweep)
    dirs = [Path(p) for p in sweep]
    if len(dirs) != 1:
        raise StudyError(f"this summary takes one sweep directory, got {len(dirs)}: "
                         + " ".join(map(str, dirs)))
    return dirs[0]


def report_figures(sweep: Paths, out_dir: Path) -> None:
    """actlab-report's page for the sweep (no replays); its REPORT_FIGURES copied to out_dir."""
    page = Path(report.build(one_sweep(sweep), replay=False))
    for png in REPORT_FIGURES:
        src = page.parent / png
        if src.exists():
            shutil.copy(src, out_dir / png)
