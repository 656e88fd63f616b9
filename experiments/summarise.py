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

from actlab import analysis
from actlab.analysis import report
from actlab.runs.records import bootstrap_ci

HERE = Path(__file__).resolve().parent


def md(df: pd.DataFrame, fmt: str = ".4g") -> str:
    """A DataFrame as a markdown table (index levels first; floats as `fmt`).

    The studies' own summarise.py scripts use it too (see `shared_md`).
    """
    df = df.reset_index()
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    def cell(v) -> str:
        return f"{v:{fmt}}" if isinstance(v, float | np.floating) else str(v)

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
    if name == "activation_zoo":
        return zoo_table(sweep)
    if name == "gelu_vs_swish":
        return gelu_swish_table(sweep)
    raise SystemExit(f"no summary for {name}")


def per_run_cost(summ: pd.DataFrame) -> pd.Series:
    """Milliseconds of training (compilation excluded) per step, all members together."""
    import json

    ms = {}
    for run in summ["run"].unique():
        s = json.loads((Path(run) / "summary.json").read_text())
        ms[run] = 1e3 * s["train_seconds"] / s["config"]["train"]["steps"]
    return summ["run"].map(ms)


def at_last_step(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last logged step."""
    return df[df["step"] == df.groupby("run")["step"].transform("max")]


def final_layer_means(sweep: Path, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Each member's last record of each metric, averaged over hidden layers: (run, seed) rows."""
    df = analysis.load_sweep(sweep)
    sel = at_last_step(df[df["metric"].isin(metrics) & df["layer"].notna()])
    return sel.groupby(["run", "seed", "metric"])["value"].mean().unstack("metric").reset_index()


def ci_cell(v: pd.Series) -> str:
    lo, hi = bootstrap_ci(v)
    return f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]"


def zoo_table(sweep: Path) -> str:
    """Per (dataset, model): activations ranked by final test accuracy with 95% intervals."""
    summ = analysis.summaries(sweep)
    summ["ms_per_step"] = per_run_cost(summ)
    summ = summ.merge(final_layer_means(sweep, ("dead_frac", "sat_frac")), on=["run", "seed"])
    parts, panels = [], []
    for (dset, model), g in summ.groupby(["dataset", "model"]):
        rows = []
        for act, a in g.groupby("activation"):
            stt = a["steps_to_target"].dropna()
            rows.append({"activation": act, "acc": a["final_eval_acc"].mean(),
                         "final test acc [95% CI]": ci_cell(a["final_eval_acc"]),
                         "steps to loss 0.5 (median)":
                             f"{stt.median():.0f} ({len(stt)}/{len(a)})" if len(stt)
                             else f"- (0/{len(a)})",
                         "dead_frac": a["dead_frac"].mean(), "sat_frac": a["sat_frac"].mean(),
                         "ms/step": a["ms_per_step"].mean()})
        t = pd.DataFrame(rows).sort_values("acc", ascending=False).reset_index(drop=True)
        t.insert(0, "rank", np.arange(1, len(t) + 1))
        panels.append((f"{dset}, {model}", g, t["activation"].tolist()))
        parts.append(f"### {dset}, {model}\n\n" + md(t.drop(columns="acc").set_index("rank")))
    forest_plot(panels, HERE / "activation_zoo" / "ranking.png")
    return "\n\n".join(parts)


def forest_plot(panels, path: Path) -> None:
    """One panel per setting: each activation's mean test accuracy with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 6.5), sharey=False)
    for ax, (title, g, order) in zip(np.atleast_1d(axs), panels, strict=True):
        for i, act in enumerate(order):
            v = g.loc[g["activation"] == act, "final_eval_acc"]
            lo, hi = bootstrap_ci(v)
            ax.plot([lo, hi], [i, i], color="tab:blue", lw=2)
            ax.plot(v.mean(), i, "o", color="tab:blue", ms=4)
        ax.set_yticks(range(len(order)), order, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("final test accuracy")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


COST_ELEMENTS, COST_REPS, COST_ROUNDS = 1 << 18, 64, 5


def function_cost(labels: dict[str, tuple[str, dict]], n: int = COST_ELEMENTS,
                  reps: int = COST_REPS, rounds: int = COST_ROUNDS) -> pd.DataFrame:
    """Nanoseconds per element of each activation alone: forward, forward + backward (jit).

    Each timed program applies the function ``reps`` times to a cache-sized array inside one
    ``lax.fori_loop`` and reduces the result, so the figure is the function's arithmetic, not
    dispatch overhead or the memory traffic of writing a fresh 16 MB output on every call.
    """
    import timeit

    import jax
    import jax.numpy as jnp
    from jax import lax

    from actlab import activations

    z0 = jax.random.normal(jax.random.PRNGKey(0), (n,))

    def looped(g):
        def run(z, lp):
            def body(i, acc):
                return acc + g(z * (1.0 + 1e-3 * i.astype(z.dtype)), lp)
            return lax.fori_loop(0, reps, body, jnp.float32(0))
        return jax.jit(run)

    fns = {}
    for label, (name, params) in labels.items():
        sp = activations.spec(name, **params)
        lp = {k: jnp.float32(v) for k, v in sp.learned.items()}

        def total(z, lp, sp=sp):
            return sp(z, **lp).sum()

        def fwd_bwd(z, lp, total=total):
            gz, glp = jax.grad(total, argnums=(0, 1))(z, lp)
            return gz.sum() + sum(jax.tree_util.tree_leaves(glp), jnp.float32(0))

        fns[label] = (lp, {"forward ns/element": looped(total),
                           "forward+backward ns/element": looped(fwd_bwd)})
    best: dict[str, dict[str, float]] = {label: {} for label in labels}
    for _ in range(rounds):  # interleaved rounds, best of all: robust to a noisy neighbour
        for label, (lp, cols) in fns.items():
            for col, f in cols.items():
                jax.block_until_ready(f(z0, lp))
                t = min(timeit.repeat(lambda f=f, lp=lp: jax.block_until_ready(f(z0, lp)),
                                      number=3, repeat=3)) / 3
                best[label][col] = min(best[label].get(col, np.inf), 1e9 * t / (n * reps))
    return pd.DataFrame(best).T


def gelu_swish_table(sweep: Path) -> str:
    """Accuracy, convergence and cost per step per variant and model; the functions timed alone."""
    summ = analysis.summaries(sweep)
    summ["ms_per_step"] = per_run_cost(summ)
    df = analysis.load_sweep(sweep)
    beta = at_last_step(df[df["metric"].str.startswith("swish_beta")])
    beta = beta.groupby("run")["value"].agg(["min", "max"])
    rows = []
    for (model, act), g in summ.groupby(["model", "activation"]):
        stt = g["steps_to_target"].dropna()
        b = beta.loc[g["run"].iloc[0]] if g["run"].iloc[0] in beta.index else None
        rows.append({"model": model, "activation": act,
                     "final test acc [95% CI]": ci_cell(g["final_eval_acc"]),
                     "final train loss": g["final_train_loss"].mean(),
                     "steps to loss 1.0 (median)": stt.median() if len(stt) else np.nan,
                     "ms/step (4 seeds)": g["ms_per_step"].mean(),
                     "learned beta (range over layers)":
                         "-" if b is None else f"{b['min']:.3f} .. {b['max']:.3f}"})
    cost = function_cost({"gelu": ("gelu", {}), "gelu(approximate=True)":
                          ("gelu", {"approximate": True}), "swish": ("swish", {}),
                          "swish(learnable=True)": ("swish", {"learnable": True}),
                          "relu (reference)": ("relu", {})})
    cost.index.name = "function"
    return (md(pd.DataFrame(rows).set_index(["model", "activation"])) + "\n\nEach function "
            f"alone, applied {COST_REPS} times to {COST_ELEMENTS >> 10}K float32 elements in "
            f"one jitted loop (best over {COST_ROUNDS} interleaved rounds, this CPU):\n\n"
            + md(cost))


def heads_table(sweep: Path) -> str:
    """Accuracy, ECE and the spread of summed class probabilities, from replayed final models."""
    import json

    from actlab.config import Config
    from actlab.runs import retrain as replay

    rows = []
    for run in analysis.run_dirs(sweep):
        cfg = Config.from_dict(json.loads((run / "summary.json").read_text())["config"])
        exp, snaps = replay.replay(cfg, [cfg.train.steps])
        for i in range(len(exp.members)):
            out = replay.forward(exp, snaps[cfg.train.steps], exp.dataset.x_test, member=i)
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
