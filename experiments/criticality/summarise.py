"""Summary of the criticality sweep: results.md and the figures beside the README.

    python -m experiments.summarise criticality [SWEEP_DIR]    # default: multirun/criticality

Writes results.md (test accuracy over depth x sigma_w2 for each activation; the deepest
trained network against 6 xi_c), trainable_depth.png (the accuracy heatmap with the mean-field
6 xi_c curve and the critical sigma_w2 drawn over it) and signal_propagation.png (actlab-report's
predicted vs measured q_l, c_l and gradient norms at initialisation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from actlab import analysis, theory
from actlab.analysis import Paths, plots, report
from actlab.analysis.plots.style import _subplots, style
from experiments.common import md

TRAINED = 0.5  # test accuracy that counts as trained (chance: 0.1, shallow nets: ~0.95)
FMT = ".3g"  # the tables' floats


def members(sweep: Paths) -> pd.DataFrame:
    """One row per member: activation, depth, sigma_w2 (gain^2 init.sigma_w2), sigma_b2, acc."""
    summ = analysis.summaries(sweep)
    rows = []
    for run, g in summ.groupby("run"):
        cfg = analysis.run_config(run)
        ini = cfg["init"]
        for m in g.to_dict("records"):
            rows.append({"activation": m["activation"], "depth": int(m["depth"]),
                         "sigma_w2": round(m["init.gain"] ** 2 * ini["sigma_w2"], 6),
                         "sigma_b2": float(ini["sigma_b2"]), "acc": float(m["final_eval_acc"]),
                         "train_loss": float(m["final_train_loss"]),
                         "steps": int(cfg["train"]["steps"])})
    return pd.DataFrame(rows)


def six_xi_c(act: str, w: np.ndarray, b: float) -> np.ndarray:
    """6 xi_c over a sigma_w2 grid (inf at the edge of chaos, nan where q* diverges)."""
    return 6 * theory.phase_diagram(act, w, [b])["xi_c"][0]


def heatmap(res: pd.DataFrame, path: Path) -> None:
    """Test accuracy over (sigma_w2, depth) per activation, with 6 xi_c and the critical point."""
    acts = list(dict.fromkeys(res["activation"]))
    with style():
        fig, axes = _subplots(1, len(acts), figsize=(5.6 * len(acts), 4.4), squeeze=False)
        for ax, act in zip(axes[0], acts, strict=True):
            piv = res[res["activation"] == act].pivot_table(index="depth", columns="sigma_w2",
                                                             values="acc")
            w, d = piv.columns.to_numpy(float), piv.index.to_numpy(float)
            we = np.concatenate([[w[0] - (w[1] - w[0]) / 2], (w[1:] + w[:-1]) / 2,
                                 [w[-1] + (w[-1] - w[-2]) / 2]])
            de = np.concatenate([[d[0] / 2], (d[1:] + d[:-1]) / 2, [d[-1] + (d[-1] - d[-2]) / 2]])
            mesh = ax.pcolormesh(we, de, piv.to_numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            b = float(res["sigma_b2"].iloc[0])
            grid = np.linspace(we[0], we[-1], 400)
            ax.plot(grid, six_xi_c(act, grid, b), color="white", lw=2.2,
                    label=r"$6\,\xi_c$ (mean field)")
            crit = theory.critical_sigma_w2(act, b)
            ax.axvline(crit, color="#D55E00", ls="--", lw=1.6,
                       label=rf"critical $\sigma_w^2$ = {crit:.3g}")
            ax.set(xlim=(we[0], we[-1]), ylim=(de[0], de[-1]), xlabel=r"$\sigma_w^2$",
                   ylabel="depth (hidden layers)",
                   title=rf"{act}, $\sigma_b^2$ = {b:g}: test accuracy after "
                         f"{res['steps'].max()} steps")
            ax.grid(False)
            ax.legend(loc="upper right", fontsize=8, facecolor="0.2", labelcolor="white",
                      frameon=True)
            fig.colorbar(mesh, ax=ax, label="test accuracy")
        fig.tight_layout()
    plots.savefig(fig, path)


def tables(res: pd.DataFrame) -> str:
    """results.md: per activation, accuracy over depth x sigma_w2; 6 xi_c against measured."""
    parts = []
    b = float(res["sigma_b2"].iloc[0])
    for act, g in res.groupby("activation", sort=False):
        crit = theory.critical_sigma_w2(act, b)
        acc = g.pivot_table(index="depth", columns="sigma_w2", values="acc")
        acc.columns = [f"{c:.3g}" for c in acc.columns]
        w = np.array(sorted(g["sigma_w2"].unique()))
        trained = g[g["acc"] >= TRAINED].groupby("sigma_w2")["depth"].max()
        bound = pd.DataFrame({"sigma_w2": w, "6 xi_c": six_xi_c(act, w, b),
                              f"deepest with acc >= {TRAINED}": [
                                  int(trained[x]) if x in trained else "-" for x in w]})
        parts.append(f"### {act} (critical sigma_w2 = {crit:.4g} at sigma_b2 = {b:g})\n\n"
                     "Test accuracy, depth x sigma_w2:\n\n" + md(acc.map(lambda v: f"{v:.2f}"), FMT)
                     + "\n\nTrainable depth: mean field against measured\n\n"
                     + md(bound.set_index("sigma_w2"), FMT))
    return "\n\n".join(parts)


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md's tables; trainable_depth.png and signal_propagation.png into out_dir."""
    res = members(sweep)  # activations in the sweep's order (run directories 0, 1, ...)
    heatmap(res, out_dir / "trainable_depth.png")
    df = analysis.load_sweep(sweep)
    rows, _ = report.signal_rows(df[df["depth"] == 40])
    with plots.offscreen():
        plots.savefig(report.signal_figure(rows), out_dir / "signal_propagation.png")
    return tables(res)
