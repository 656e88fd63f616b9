"""Summary of the edge_of_stability sweep: results.md and the figures beside the README.

    python -m experiments.summarise edge_of_stability [SWEEP_DIR]
    # default: multirun/edge_of_stability

Writes results.md (per activation and learning rate: the sharpness at initialisation and at
its low point, the engine's eos_step, the first step at which the sharpness reaches 2/lr
from below, the sharpening rate before it, the sharpness relative to 2/lr afterwards, how
often the training loss goes up before and after, final losses and test accuracy),
sharpness.png (actlab.analysis.plots.probes.sharpness for tanh), sharpness_loss.png (sharpness and
training loss of every activation, a column each) and hessian_density.png
(actlab.analysis.plots.probes.hessian_density for tanh at a few steps, two learning rates).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd

from actlab import analysis
from actlab.analysis import Paths, plots
from actlab.analysis.plots import probes as plots_probes
from actlab.analysis.plots.style import _subplots, style
from experiments.common import md

ORDER = ("tanh", "relu", "elu", "softplus", "gelu")
DENSITY_OF = "tanh"  # the activation whose Hessian density is drawn
DENSITY_STEPS = (0, 100, 500, 1000, 2000, 3500)  # its probe steps drawn
DENSITY_LRS = (0.1, 0.2)


def series(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(activation, lr, step) -> value of a scalar metric (mean over seeds: one seed here)."""
    sel = df[(df["metric"] == metric) & df["layer"].isna()]
    return sel.groupby(["activation", "lr", "step"])["value"].mean()


def reached_from_below(sharp: pd.Series, limit: float) -> int | None:
    """First probe step with sharpness >= limit after one with sharpness below it.

    Equals eos_step when training starts below the limit; when it starts above (the
    first steps then throw the parameters into flatter regions), it is the return to
    the limit after that drop.
    """
    below = False
    for step, v in sharp.items():
        if v < limit:
            below = True
        elif below:
            return int(step)
    return None


def frac_up(loss: pd.Series) -> float:
    """Share of logged steps at which the training loss is higher than at the previous one."""
    d = np.diff(loss.to_numpy())
    return float(np.mean(d > 0)) if d.size else float("nan")


def first_rise(loss: pd.Series, sharp: pd.Series, limit: float) -> str:
    """First logged step whose loss exceeds the previous one, with the last sharpness before it."""
    up = loss.index[1:][np.diff(loss.to_numpy()) > 0]
    if not len(up):
        return "-"
    return f"{int(up[0])} ({sharp.loc[:up[0]].iloc[-1] / limit:.2f})"


def measures(df: pd.DataFrame, summ: pd.DataFrame) -> pd.DataFrame:
    """A row per (activation, lr): the sharpness against 2/lr over training, losses, accuracy."""
    sharp_all, loss_all = series(df, "hessian/top_eig"), series(df, "train/loss")
    rows = []
    for m in summ.to_dict("records"):
        act, lr = m["activation"], float(m["lr"])
        sharp, loss = sharp_all.loc[(act, lr)], loss_all.loc[(act, lr)]
        limit = 2.0 / lr
        reach = reached_from_below(sharp, limit)
        end = reach if reach is not None else int(sharp.index[-1])
        pre = sharp.loc[:end]
        low_step = int(pre.idxmin())
        rate = 100 * (sharp.loc[end] - pre.min()) / max(end - low_step, 1)
        after = sharp.loc[reach:] / limit if reach is not None else pd.Series(dtype=float)
        cut = reach if reach is not None else int(loss.index[-1])
        hover = "-" if after.empty else (f"{after.mean():.3f} "
                                         f"[{after.min():.2f}, {after.max():.2f}]")
        up_after = "-" if reach is None else f"{frac_up(loss.loc[cut:]):.2f}"
        rows.append({
            "activation": act, "lr": lr, "2/lr": round(limit, 2),
            "sharpness at 0": sharp.iloc[0],
            "low point (step)": f"{pre.min():.3g} ({low_step})",
            "eos_step": "-" if m["eos_step"] is None or np.isnan(m["eos_step"])
                        else int(m["eos_step"]),
            "reaches 2/lr from below": "-" if reach is None else reach,
            "steps low point to 2/lr": "-" if reach is None else reach - low_step,
            "sharpening per 100 steps": rate,
            "sharpness / (2/lr) after: mean [min, max]": hover,
            "sharpness / (2/lr) at end": sharp.iloc[-1] / limit,
            "first loss rise (sharpness / (2/lr) then)": first_rise(loss, sharp, limit),
            "loss up, before / after": f"{frac_up(loss.loc[:cut]):.2f} / {up_after}",
            "loss at reach": "-" if reach is None else f"{loss.loc[reach]:.4f}",
            "final train loss": float(m["final_train_loss"]),
            "final test acc": float(m["final_eval_acc"]),
        })
    res = pd.DataFrame(rows)
    res["activation"] = pd.Categorical(res["activation"], [a for a in ORDER
                                                             if a in set(res["activation"])])
    return res.sort_values(["activation", "lr"]).set_index(["activation", "lr"])


def grid(df: pd.DataFrame, path: Path) -> None:
    """Sharpness (top row, 2/lr dashed) and training loss (bottom row) per activation."""
    sharp, loss = series(df, "hessian/top_eig"), series(df, "train/loss")
    acts = [a for a in ORDER if a in set(df["activation"])]
    lrs = sorted({float(v) for v in df["lr"].dropna()})
    cmap = mpl.colormaps["viridis"]
    with style():
        fig, axes = _subplots(2, len(acts), figsize=(3.3 * len(acts), 5.6), squeeze=False,
                              sharex=True)
        for j, act in enumerate(acts):
            top, bottom = axes[0][j], axes[1][j]
            for i, lr in enumerate(lrs):
                c = cmap(i / max(len(lrs) - 1, 1) * 0.9)
                s, l = sharp.loc[(act, lr)], loss.loc[(act, lr)]
                top.plot(s.index, s.values, color=c, lw=1.3, label=f"lr={lr:g}")
                top.axhline(2 / lr, color=c, lw=0.9, ls="--")
                bottom.plot(l.index, l.values, color=c, lw=0.9)
            top.set(title=act, ylim=(0, 1.6 * 2 / min(lrs)))
            bottom.set(yscale="log", xlabel="step")
        axes[0][0].set_ylabel("sharpness (2/lr dashed)")
        axes[1][0].set_ylabel("training loss (full batch)")
        axes[0][-1].legend(loc="upper right", fontsize=8)
        fig.tight_layout()
    plots.savefig(fig, path)


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md's table; sharpness_loss, sharpness, hessian_density .png into out_dir."""
    df = analysis.load_sweep(sweep)
    summ = analysis.summaries(sweep)
    res = measures(df, summ)
    steps = int(df["step"].max())
    text = (
        f"Full-batch gradient descent, {steps} steps; sharpness = hessian/top_eig of the "
        "training loss, measured every "
        f"{int(np.diff(sorted(df[df['metric'] == 'hessian/top_eig']['step'].unique()))[0])} "
        "steps; the loss is logged every "
        f"{int(np.diff(sorted(df[df['metric'] == 'train/loss']['step'].unique()))[0])} "
        "steps.\n\n" + md(res))
    grid(df, out_dir / "sharpness_loss.png")
    run = summ[summ["activation"] == DENSITY_OF]["run"].iloc[0]
    with plots.offscreen():
        plots.savefig(plots_probes.sharpness(df[df["run"] == run]), out_dir / "sharpness.png")
        dens = analysis.load_density(run)
        dens = dens[dens["step"].isin(DENSITY_STEPS) & dens["optimizer.lr"].isin(DENSITY_LRS)]
        plots.savefig(plots_probes.hessian_density(dens, sigma=0.3),
                      out_dir / "hessian_density.png")
    return text
