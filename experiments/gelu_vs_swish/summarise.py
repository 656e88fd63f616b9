"""Summary of the gelu_vs_swish sweep: accuracy, speed and cost per variant; functions timed.

Besides the sweep's table, results.md times each function alone on this machine
(`function_cost`); the figures are actlab-report's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from actlab import analysis
from actlab.analysis import Paths
from experiments.common import at_last_step, ci_cell, md, per_run_cost, report_figures

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


def summarise(sweep: Paths, out_dir: Path) -> str:
    """results.md: accuracy, convergence and cost per step per variant and model; cost alone."""
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
    report_figures(sweep, out_dir)
    return (md(pd.DataFrame(rows).set_index(["model", "activation"])) + "\n\nEach function "
            f"alone, applied {COST_REPS} times to {COST_ELEMENTS >> 10}K float32 elements in "
            f"one jitted loop (best over {COST_ROUNDS} interleaved rounds, this CPU):\n\n"
            + md(cost))
