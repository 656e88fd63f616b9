"""actlab-report: a run or sweep directory -> DIR/report/ (PNGs + self-contained report.html).

Figures are built offscreen (detached from pyplot), so a report is written the same
way on a headless machine, from the command line or from a notebook, and leaves the
caller's matplotlib backend, open figures and rcParams as they were.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from actlab import activations, analysis, plots

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{padding:.3em .7em;border-bottom:1px solid #eee;
text-align:right}th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 0}.note{color:#666;font-size:.9em}
"""


def _registered(label: str) -> str | None:
    base = label.split("(")[0]
    return base if base in activations.names(include_output=False) else None


def _replay_figures(summ: pd.DataFrame, out: Path, max_runs: int) -> list[tuple[str, str]]:
    """Pre-activation distributions and (for 2-D inputs) decision boundaries, by replay."""
    from actlab import replay
    from actlab.config import Config

    figs: list[tuple[str, str]] = []
    runs = summ.drop_duplicates("run").head(max_runs)
    boundary = []
    for i, row in enumerate(runs.itertuples()):
        try:
            cfg = Config.from_dict(analysis.run_config(row.run))
            steps = sorted({0, cfg.train.steps // 4, cfg.train.steps})
            exp, snaps = replay.replay(cfg, steps)
        except Exception as e:  # a run this version cannot rebuild: say so, keep going
            figs.append((f"replay of {row.run} skipped: {e}", ""))
            continue
        probe = exp.dataset.x_train[: cfg.train.probe_size]
        zs = {s: replay.forward(exp, p, probe)["z"] for s, p in snaps.items()}
        name = f"distribution_{i}.png"
        fig = plots.distributions(zs, title=f"z ({row.activation}, depth {row.depth})")
        plots.savefig(fig, out / name)
        figs.append((f"Pre-activation distribution per layer: {row.activation}, depth "
                     f"{row.depth}", name))
        if exp.dataset.input_shape == (2,):
            boundary.append((row, exp, snaps[cfg.train.steps]))
    if boundary:
        cols = min(4, len(boundary))
        rows = int(np.ceil(len(boundary) / cols))
        with plots.style():
            fig = Figure(figsize=(3.2 * cols, 3.1 * rows))
            axes = fig.subplots(rows, cols, squeeze=False)
            for ax, (row, exp, params) in zip(axes.flat, boundary, strict=False):
                ds = exp.dataset
                x_raw = ds.x_test * ds.std + ds.mean

                def predict(x, exp=exp, params=params):
                    return replay.forward(exp, params, x)["probs"][:, 1]

                plots.decision_boundary(predict, x_raw, ds.y_test, ds.mean, ds.std, ax=ax,
                                        title=f"{row.activation} d{row.depth}")
            for ax in list(axes.flat)[len(boundary):]:
                ax.set_visible(False)
            fig.tight_layout()
        plots.savefig(fig, out / "decision_boundary.png")
        figs.append(("Decision boundaries (test points overlaid)", "decision_boundary.png"))
    return figs


@plots.offscreen()
def build(path: str | os.PathLike, replay: bool = True, max_replays: int = 6) -> Path:
    """Write figures and report.html for the run or sweep under `path`; return the HTML path."""
    path = Path(path)
    df = analysis.load_sweep(path)
    summ = analysis.summaries(path)
    table = analysis.comparison_table(path, df)
    out = path / "report"
    out.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, str]] = []

    def add(title: str, name: str, fig) -> None:
        plots.savefig(fig, out / name)
        figs.append((title, name))

    names = [n for n in dict.fromkeys(map(_registered, summ["activation"])) if n]
    if names:
        add("Activation functions and derivatives", "activations.png",
            plots.activation_curves(names))
    add("Gradient norm per layer at initialisation", "grad_norm_init.png",
        plots.layer_profile(df, "grad_norm", step="first"))
    add("Gradient norm per layer at the end of training", "grad_norm_final.png",
        plots.layer_profile(df, "grad_norm", step="last"))
    add("Gradient norm over training (layer x step)", "grad_norm_heatmap.png",
        plots.layer_heatmap(df, "grad_norm"))
    add("Dead and saturated units per layer over training", "dead_saturated.png",
        plots.dead_saturated(df))
    add("Learning curves (mean over seeds, band: 1 std)", "learning_curves.png",
        plots.learning_curves(df))
    if summ["target"].notna().any():
        add("Convergence speed", "convergence.png", plots.convergence(summ))
    if replay:
        figs += _replay_figures(summ, out, max_replays)

    def fmt(x):
        return f"{x:.4g}" if isinstance(x, float) else x

    body = [f"<h1>actlab report</h1><p class=note>{html.escape(str(path))}: "
            f"{summ['run'].nunique()} runs, {len(summ)} members</p>",
            "<h2>Comparison</h2>", table.to_html(index=False, float_format=fmt, na_rep="-")]
    for title, name in figs:
        if not name:
            body.append(f"<p class=note>{html.escape(title)}</p>")
            continue
        data = base64.b64encode((out / name).read_bytes()).decode()
        body.append(f"<h2>{html.escape(title)}</h2>"
                    f"<img alt='{name}' data-file='{name}' src='data:image/png;base64,{data}'>")
    cols = [c for c in ("activation", "depth", "width", "dataset", "lr", "seed", "status",
                        "final_eval_acc", "steps_to_target", "diverged_at", "run") if c in summ]
    body += ["<h2>Members</h2>", summ[cols].to_html(index=False, float_format=fmt, na_rep="-")]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>actlab report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    (out / "report.html").write_text(page)
    return out / "report.html"
