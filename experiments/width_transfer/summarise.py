"""Summary of the width_transfer sweeps: optimal learning rate per width, coordinate checks.

    python -m experiments.summarise width_transfer multirun/width_transfer \
        multirun/width_transfer_coord multirun/width_transfer_transformer

The learning-rate sweep (study.yaml) gives, per parametrization and activation, the best
Adam learning rate at each width (mean final training loss over seeds; a diverged member
never wins), its ratio to width 64's, and the transfer regret: how much higher the loss is
at width n with width 64's best rate than with width n's own. The coordinate-check sweeps
(the same configs for their first steps, every step logged) give the slope of log RMS on
log width per layer, for the output logits and, in the Transformer, the attention logits.
Figures: lr_transfer.png, coord_check.png (MLP), coord_check_transformer.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from actlab.analysis.plots import savefig, style
from actlab.analysis.plots import width as plots_width
from experiments.common import md

ORDER = ("relu", "gelu", "tanh", "swiglu")


def _dirs(sweep: Paths) -> list[Path]:
    return analysis.run_dirs(sweep)


def split(sweep: Paths) -> tuple[list[Path], list[Path]]:
    """(learning-rate runs, coordinate-check runs): the latter log every step."""
    lr_runs, coord = [], []
    for d in _dirs(sweep):
        cfg = analysis.run_config(d)
        (coord if cfg["train"]["log_every"] == 1 else lr_runs).append(d)
    return lr_runs, coord


def transfer(summ: pd.DataFrame) -> pd.DataFrame:
    """transfer_table with the regret of width 64's best rate at every width."""
    table = plots_width.transfer_table(summ)
    if table.empty:
        return table
    f = summ.assign(n=summ["width"], loss=pd.to_numeric(summ["final_train_loss"],
                                                        errors="coerce"))
    f.loc[~np.isfinite(f["loss"]), "loss"] = np.inf
    mean = f.groupby(["param", "activation", "n", "lr"])["loss"].mean()
    regret = []
    for row in table.itertuples():
        narrow = table[(table["param"] == row.param) & (table["activation"] == row.activation)]
        lr0 = narrow.loc[narrow["width"].idxmin(), "best_lr"]
        regret.append(float(mean.get((row.param, row.activation, row.width, lr0), np.nan)
                            - row.best_loss))
    return table.assign(regret=regret)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    key = {a: i for i, a in enumerate(ORDER)}
    return df.assign(_a=df["activation"].map(lambda a: key.get(a, len(key)))).sort_values(
        ["param", "_a", "width"]).drop(columns="_a")


def shift_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Per (param, activation): the optimum's move from the narrowest to the widest width,
    in octaves (log2 of the ratio), and the widest width's regret."""
    rows = []
    for (param, act), g in table.groupby(["param", "activation"]):
        g = g.sort_values("width")
        rows.append({"param": param, "activation": act,
                     "widths": f"{g['width'].iat[0]}-{g['width'].iat[-1]}",
                     "best lr (narrow)": g["best_lr"].iat[0],
                     "best lr (wide)": g["best_lr"].iat[-1],
                     "shift (octaves)": float(np.log2(g["lr_ratio"].iat[-1])),
                     "max |shift| (octaves)": float(np.nanmax(np.abs(np.log2(g["lr_ratio"])))),
                     "regret at widest": g["regret"].iat[-1]})
    return _order(pd.DataFrame(rows).assign(width=0)).drop(columns="width")


def slope_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The coordinate check's slopes at the last step drawn, a column per panel."""
    _, slopes = plots_width.coord_table(df)
    if slopes.empty:
        return slopes
    last = slopes[slopes["step"] == slopes.groupby(list(plots_width.GROUP))["step"].transform(
        "max")]
    wide = last.pivot_table(index=list(plots_width.GROUP), columns="panel", values="slope")
    wide = wide[sorted(wide.columns, key=plots_width.panel_order)].reset_index()
    wide.columns.name = None
    return _order(wide.assign(width=0)).drop(columns="width")


def summarise(sweep: Paths, out_dir: Path) -> str:
    lr_runs, coord = split(sweep)
    parts = []
    if lr_runs:
        summ = analysis.summaries(lr_runs)
        table = transfer(summ)
        with style():
            savefig(plots_width.lr_transfer(summ), out_dir / "lr_transfer.png")
        parts += ["### Optimal learning rate per width\n",
                  "Best Adam learning rate (mean final training loss over 3 seeds; grid "
                  "2^-13 ... 2^-4), its ratio to width 64's, and the regret: the loss at width "
                  "n with width 64's best rate minus the loss with width n's own.\n",
                  md(_order(table)[["param", "activation", "width", "best_lr", "lr_ratio",
                                    "best_loss", "regret"]].set_index("param"), ".3g"),
                  "\n### How far the optimum moves\n",
                  md(shift_rows(table).set_index("param"), ".3g")]
    mlp = [d for d in coord if analysis.run_config(d)["model"]["name"] == "mlp"]
    for name, runs, png in (("MLP", mlp, "coord_check.png"),
                            ("Transformer", [d for d in coord if d not in mlp],
                             "coord_check_transformer.png")):
        if not runs:
            continue
        df = analysis.load_sweep(runs)
        with style():
            savefig(plots_width.coord_check(df), out_dir / png)
        parts += [f"\n### Coordinate check ({name})\n",
                  "Slope of log RMS on log width at the last step drawn (0: the size does "
                  "not change with width; layer l: pre-activations, attention l: attention "
                  "logits, logits: the output).\n",
                  md(slope_rows(df).set_index("model"), "+.2f")]
    return "\n".join(parts)
