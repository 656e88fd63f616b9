"""Summary of the dyt_vs_layernorm sweep: results.md and the figures beside the README.

    python -m experiments.summarise dyt_vs_layernorm [SWEEP_DIR ...]
    # default: multirun/dyt_vs_layernorm

Writes results.md (per norm and depth: final test accuracy and loss with 95% bootstrap
intervals, steps to the loss target, diverged members, the learned alphas at the end; then
DyT's alpha against 1/std of each DyT's input, measured by retraining seed 0),
learning_curves.png, act_std.png (act_std/l over training, a panel per norm and depth),
dyt_alpha.png (dyt_alpha/l and dyt_alpha_attn/l over training) and alpha_vs_std.png.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd

from actlab import analysis
from actlab.analysis import Paths, plots
from actlab.analysis.plots.style import _subplots, style
from experiments.common import ci_cell, md, num_params

NORMS = ("layer", "dyt", "none")
NORM_COLOR = {"layer": "#0072B2", "dyt": "#D55E00", "none": "#009E73"}
REPLAY_STEPS = (0, 50, 100, 250, 500)  # snapshots of seed 0 for alpha vs 1/std


def alpha_range(df: pd.DataFrame, run: str, metric: str) -> str:
    """min .. max over layers of a run's final alpha (mean over its members)."""
    sel = df[(df["run"] == run) & (df["metric"] == metric)]
    if not len(sel):
        return "-"
    last = sel[sel["step"] == sel["step"].max()].groupby("layer", dropna=False)["value"].mean()
    return f"{last.min():.2f} .. {last.max():.2f}"


def tables(summ: pd.DataFrame, df: pd.DataFrame) -> str:
    """Per depth and norm: accuracy, loss, speed, divergences and the learned alphas."""
    target = summ["target"].dropna().iloc[0]
    rows = []
    for depth in sorted(summ["depth"].unique()):
        for norm in NORMS:
            g = summ[(summ["depth"] == depth) & (summ["norm"] == norm)]
            if not len(g):
                continue
            run = g["run"].iloc[0]
            stt = g["steps_to_target"].dropna()
            rows.append({
                "depth": int(depth), "norm": norm,
                "params": num_params(run),
                "final test acc [95% CI]": ci_cell(g["final_eval_acc"]),
                "final test loss [95% CI]": ci_cell(g["final_eval_loss"]),
                "final train loss": g["final_train_loss"].mean(),
                f"steps to {target} (median, reached)":
                    f"{stt.median():.0f} ({len(stt)}/{len(g)})" if len(stt)
                    else f"- (0/{len(g)})",
                "diverged": int(g["diverged_at"].notna().sum()),
                "dyt_alpha/l (end, over blocks)": alpha_range(df, run, "dyt_alpha"),
                "dyt_alpha_attn/l (end)": alpha_range(df, run, "dyt_alpha_attn"),
            })
    return md(pd.DataFrame(rows).set_index(["depth", "norm"]))


def label(df: pd.DataFrame) -> pd.DataFrame:
    """df with a `variant` column: '<norm>, depth <depth>'."""
    return df.assign(variant=df["norm"] + ", depth " + df["depth"].astype(int).astype(str))


def learning_curves_figure(df: pd.DataFrame, path: Path) -> None:
    """train/loss and eval/acc (mean over seeds, band: min..max): a line per norm and depth."""
    with style():
        fig, axes = _subplots(1, 2, figsize=(10, 3.4), squeeze=False)
        for ax, metric in zip(axes[0], ("train/loss", "eval/acc"), strict=True):
            sel = df[df["metric"] == metric]
            for (depth, norm), g in sel.groupby(["depth", "norm"]):
                s = g.groupby("step")["value"].agg(["mean", "min", "max"])
                ax.plot(s.index, s["mean"], color=NORM_COLOR[norm], ls="-" if depth > 2 else "--",
                        marker="o" if metric == "eval/acc" else None, ms=3,
                        label=f"{norm}, depth {int(depth)}")
                ax.fill_between(s.index, s["min"], s["max"], color=NORM_COLOR[norm], alpha=0.12,
                                lw=0)
            ax.set(xlabel="step", ylabel=metric)
            if metric == "train/loss":
                ax.set_yscale("log")
        axes[0][1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    plots.savefig(fig, path)


def per_layer_figure(df: pd.DataFrame, metric: str, panels: list[tuple[int, str]], path: Path,
                     attn: bool = False, log: bool = False) -> None:
    """A per-layer metric over training (mean over seeds): a panel per (depth, norm)."""
    cmap = mpl.colormaps["viridis"]
    depths = sorted({d for d, _ in panels})
    norms = [n for n in NORMS if any(p == n for _, p in panels)]
    with style():
        fig, axes = _subplots(len(depths), len(norms), figsize=(3.8 * len(norms),
                                                                2.9 * len(depths)),
                              squeeze=False, sharey=True)
        for i, depth in enumerate(depths):
            for j, norm in enumerate(norms):
                ax = axes[i][j]
                sel = df[(df["depth"] == depth) & (df["norm"] == norm) & df["layer"].notna()]
                for m, ls in ((metric, "-"), (metric + "_attn", ":")) if attn else ((metric, "-"),):
                    part = sel[sel["metric"] == m]
                    stats = part.groupby(["step", "layer"])["value"].mean().unstack("layer")
                    n = max(len(stats.columns), 2)
                    for k, layer in enumerate(stats.columns):
                        ax.plot(stats.index, stats[layer], color=cmap(k / (n - 1)), ls=ls, lw=1.3,
                                label=f"block {int(layer)}" if ls == "-" else None)
                ax.set(title=f"norm={norm}, depth {int(depth)}", xlabel="step")
                if log:
                    ax.set_yscale("log")
                if j == 0:
                    ax.set_ylabel(f"{metric}/l (solid), {metric}_attn/l (dotted)" if attn
                                  else f"{metric}/l", fontsize=8 if attn else 9)
                if len(stats.columns) <= 8:
                    ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
    plots.savefig(fig, path)


def dyt_inputs(run: str) -> pd.DataFrame:
    """Retrain seed 0 of a DyT run; at REPLAY_STEPS, each DyT's alpha and its input's std."""
    import flax.linen as nn
    import jax

    from actlab.config import Config
    from actlab.models import DyT
    from actlab.runs import retrain

    cfg = json.loads((Path(run) / "summary.json").read_text())["config"]
    cfg = {k: cfg[k] for k in ("activation", "model", "dataset", "optimizer", "init", "train")}
    cfg["train"]["seeds"] = 1  # member 0 of the run: seed train.seed
    config = Config.from_dict(cfg)
    exp, snaps = retrain.retrain(config, list(REPLAY_STEPS))
    x = np.asarray(exp.dataset.x_train[: config.train.probe_size])
    rows = []
    for step, snap in snaps.items():
        snap = jax.tree.map(lambda a: a[0], snap)
        seen = []

        def record(next_fun, args, kwargs, context, seen=seen):
            if isinstance(context.module, DyT) and context.method_name == "__call__":
                seen.append((context.module.name, float(np.std(np.asarray(args[0])))))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(record):
            exp.model.apply(snap["params"], snap["model_state"], x)
        for name, std in seen:
            alpha = float(snap["params"][name]["dyt_alpha"])
            site = "final" if name == "final_ln" else ("MLP" if name.endswith("ln2")
                                                       else "attention")
            rows.append({"depth": config.model.depth, "step": step, "norm": name, "site": site,
                         "alpha": alpha, "input std": std, "1/std": 1.0 / std})
    return pd.DataFrame(rows)


def alpha_vs_std_figure(tab: pd.DataFrame, path: Path) -> None:
    """Learned alpha against 1/std of the DyT's input: a panel per depth, colour = step."""
    depths = sorted(tab["depth"].unique())
    cmap = mpl.colormaps["viridis"]
    steps = sorted(tab["step"].unique())
    markers = {"MLP": "o", "attention": "s", "final": "*"}
    with style():
        fig, axes = _subplots(1, len(depths), figsize=(4.4 * len(depths), 3.8), squeeze=False)
        for ax, depth in zip(axes[0], depths, strict=True):
            t = tab[tab["depth"] == depth]
            for k, step in enumerate(steps):
                for site, mk in markers.items():
                    s = t[(t["step"] == step) & (t["site"] == site)]
                    ax.scatter(s["1/std"], s["alpha"], color=cmap(k / max(len(steps) - 1, 1)),
                               marker=mk, s=28, label=f"step {step}" if site == "MLP" else None)
            lim = [0, 1.05 * max(t["1/std"].max(), t["alpha"].max())]
            ax.plot(lim, lim, color="0.6", lw=0.8, ls="--")
            r = np.corrcoef(t["1/std"], t["alpha"])[0, 1]
            ax.set(xlabel="1 / std of the DyT's input", ylabel=r"learned $\alpha$",
                   title=f"depth {depth}: corr {r:.2f} (o MLP, s attention, * final)")
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    plots.savefig(fig, path)


def alpha_table(tab: pd.DataFrame) -> str:
    """Per depth and replayed step: alpha and 1/std of the input over DyT sites, corr."""
    rows = []
    for (depth, step), t in tab.groupby(["depth", "step"]):
        after = t["step"].iloc[0] > 0
        rows.append({"depth": int(depth), "step": int(step),
                     "alpha (min .. max)": f"{t['alpha'].min():.3f} .. {t['alpha'].max():.3f}",
                     "1/std of input (min .. max)":
                         f"{t['1/std'].min():.3f} .. {t['1/std'].max():.3f}",
                     "alpha x std (mean)": float((t["alpha"] * t["input std"]).mean()),
                     "corr(alpha, 1/std) over sites":
                         float(np.corrcoef(t["1/std"], t["alpha"])[0, 1]) if after else "-"})
    return md(pd.DataFrame(rows).set_index(["depth", "step"]))


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md's tables; learning_curves, act_std, dyt_alpha, alpha_vs_std .png into out_dir."""
    summ = analysis.summaries(sweep)
    df = analysis.load_sweep(sweep)
    text = tables(summ, df)
    learning_curves_figure(df, out_dir / "learning_curves.png")
    panels = sorted({(int(d), n) for d, n in zip(summ["depth"], summ["norm"], strict=True)})
    per_layer_figure(df, "act_std", panels, out_dir / "act_std.png", log=True)
    per_layer_figure(df, "dyt_alpha", [p for p in panels if p[1] == "dyt"],
                     out_dir / "dyt_alpha.png", attn=True)
    dyt_runs = sorted(summ.loc[summ["norm"] == "dyt", "run"].unique())
    tab = pd.concat([dyt_inputs(r) for r in dyt_runs], ignore_index=True)
    alpha_vs_std_figure(tab, out_dir / "alpha_vs_std.png")
    text += ("\n\nDyT's alpha against the std of its input (every DyT of seed 0, retrained; "
             "the input is the residual stream):\n\n" + alpha_table(tab))
    return text
