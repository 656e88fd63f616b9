"""Turn a finished study sweep into the small result files committed beside its README.

    python experiments/summarise.py vanishing_gradients [SWEEP_DIR]

Writes experiments/<name>/results.md (a table per study) and the figures of
`actlab-report` that the README shows (copied as small PNGs).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from actlab import analysis, report

HERE = Path(__file__).resolve().parent


def md(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (index levels first)."""
    df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)

    rows = ["| " + " | ".join(map(cell, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def layer_ratio(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """grad_norm of hidden layer 1 (the first of shape width x width) over the last."""
    g = df[(df["metric"] == "grad_norm") & (df["step"] == step) & df["layer"].notna()]
    out = []
    for (run, seed), grp in g.groupby(["run", "seed"]):
        grp = grp.sort_values("layer")
        out.append({"run": run, "seed": seed,
                    "ratio": grp["value"].iloc[1] / grp["value"].iloc[-1]})
    return pd.DataFrame(out)


def table(name: str, sweep: Path) -> str:
    summ = analysis.summaries(sweep)
    if name == "vanishing_gradients":
        df = analysis.load_sweep(sweep)
        r0 = layer_ratio(df, 0).merge(summ[["run", "seed", "activation", "depth"]],
                                      on=["run", "seed"])
        t = r0.groupby(["activation", "depth"])["ratio"].median().unstack("depth")
        acc = summ.groupby(["activation", "depth"])["final_eval_acc"].mean().unstack("depth")
        return ("grad_norm/1 / grad_norm/last at initialisation (median over seeds):\n\n"
                + md(t.map(lambda v: f"{v:.2e}")) + "\n\nfinal test accuracy "
                "(mean over seeds):\n\n" + md(acc.round(3)))
    if name == "dying_relu":
        df = analysis.load_sweep(sweep)
        dead = df[df["metric"] == "dead_frac"]
        # each member's last record: a member that diverged stops at its divergence
        ends = dead.groupby(["run", "seed", "optimizer.lr"])["step"].transform("max")
        last = dead[dead["step"] == ends]
        t = last.groupby(["activation", "depth", "optimizer.lr"])["value"].mean().unstack(
            "optimizer.lr")
        div = summ.assign(d=summ["diverged_at"].notna()).groupby(
            ["activation", "depth", "lr"])["d"].sum().unstack("lr")
        t = t.round(3).astype(str) + np.where(div.values > 0, " (diverged " + div.astype(int)
                                              .astype(str) + ")", "")
        acc = summ.groupby(["activation", "depth", "lr"])["final_eval_acc"].mean().unstack("lr")
        return ("final dead_frac (mean over layers and seeds), by learning rate:\n\n"
                + md(t) + "\n\nfinal test accuracy:\n\n"
                + md(acc.round(3)))
    if name == "playground":
        g = summ.groupby(["dataset", "activation"])
        t = pd.DataFrame({
            "best test loss": g["final_eval_loss"].min(),
            "best train loss": g["final_train_loss"].min(),
            "seeds below 0.2 (test)": g["final_eval_loss"].apply(lambda v: int((v < 0.2).sum())),
            "seeds": g.size()})
        return md(t.round(3))
    if name == "init_x_activation":
        df = analysis.load_sweep(sweep)
        s0 = df[(df["metric"] == "act_std") & (df["step"] == 0)]
        piv = s0.groupby(["run", "layer"])["value"].mean().unstack("layer")
        ratio = (piv.iloc[:, -1] / piv.iloc[:, 0]).rename("act_std/29 / act_std/0 at init")
        meta = summ[["run", "activation", "init"]].drop_duplicates().set_index("run")
        t = meta.join(ratio).groupby(["activation", "init"]).first()
        acc = summ.groupby(["activation", "init"])["final_eval_acc"].mean().rename(
            "final test acc")
        return md(t.join(acc).map(lambda v: f"{v:.3g}"))
    if name == "normalisation":
        df = analysis.load_sweep(sweep)
        r0 = layer_ratio(df, 0).merge(summ[["run", "seed", "activation", "norm"]],
                                      on=["run", "seed"])
        t = r0.groupby(["activation", "norm"])["ratio"].median().map(lambda v: f"{v:.2e}")
        g = summ.groupby(["activation", "norm"])
        out = pd.DataFrame({"grad_norm/1 / grad_norm/last at init": t,
                            "final test acc": g["final_eval_acc"].mean().round(3),
                            "steps to 90% (median)": g["steps_to_target"].median()})
        return md(out)
    if name == "recommender":
        df = analysis.load_sweep(sweep)
        ev = df[df["metric"] == "eval/rmse"]
        last = ev[ev["step"] == ev["step"].max()]
        rmse = last.groupby("activation")["value"].agg(["mean", "std"]).round(4)
        dead = df[(df["metric"] == "dead_frac") & (df["step"] == df["step"].max())]
        dead = dead.groupby(["activation", "layer"])["value"].mean().unstack("layer").round(3)
        dead.columns = [f"dead_frac/{int(c)}" for c in dead.columns]
        from actlab import data

        ds = data.load("ratings")
        base = float(np.sqrt(np.mean((ds.y_test - ds.y_train.mean()) ** 2)) * ds.meta["scale"])
        return (md(rmse.rename(columns={"mean": "test RMSE (stars)", "std": "std over seeds"})
                   .join(dead)) + f"\n\nBaseline (predict the mean training rating): "
                f"RMSE {base:.4f}")
    if name == "output_heads":
        return heads_table(sweep)
    raise SystemExit(f"no summary for {name}")


def heads_table(sweep: Path) -> str:
    """Accuracy, ECE and the spread of summed class probabilities, from replayed final models."""
    import json

    from actlab import train
    from actlab.config import Config

    rows = []
    for run in analysis.run_dirs(sweep):
        cfg = Config.from_dict(json.loads((run / "summary.json").read_text())["config"])
        exp, snaps = train.replay(cfg, [cfg.train.steps])
        for i in range(len(exp.members)):
            out = train.forward(exp, snaps[cfg.train.steps], exp.dataset.x_test, member=i)
            p, y = out["probs"], exp.dataset.y_test
            rows.append({"dataset": cfg.dataset.name, "head": cfg.model.head,
                         "acc": float((p.argmax(1) == y).mean()),
                         "ECE": analysis.expected_calibration_error(p, y),
                         "sum of probs: mean": float(p.sum(1).mean()),
                         "sum of probs: std": float(p.sum(1).std())})
    t = pd.DataFrame(rows).groupby(["dataset", "head"]).mean().round(4)
    return md(t)


def main() -> None:
    name = sys.argv[1]
    sweep = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("multirun") / name
    out = HERE / name
    (out / "results.md").write_text(table(name, sweep) + "\n")
    page = report.build(sweep, replay=False)
    for png in ("grad_norm_init.png", "dead_saturated.png", "convergence.png",
                "learning_curves.png"):
        src = Path(page).parent / png
        if src.exists():
            shutil.copy(src, out / png)
    print(f"wrote {out / 'results.md'}")


if __name__ == "__main__":
    main()
