"""actlab-report: a run or sweep directory -> DIR/report/ (PNGs + self-contained report.html).

Figures are built offscreen (detached from pyplot), so a report is written the same
way on a headless machine, from the command line or from a notebook, and leaves the
caller's matplotlib backend, open figures and rcParams as they were.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from actlab import activations, analysis
from actlab.analysis import plots
from actlab.analysis.plots import probes as plots_probes
from actlab.analysis.plots import tasks as plots_tasks
from actlab.analysis.plots import width as plots_width

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
    from actlab.config import Config
    from actlab.runs import retrain

    figs: list[tuple[str, str]] = []
    runs = summ.drop_duplicates("run").head(max_runs)
    boundary = []
    for i, row in enumerate(runs.itertuples()):
        try:
            cfg = Config.from_dict(analysis.run_config(row.run))
            steps = sorted({0, cfg.train.steps // 4, cfg.train.steps})
            exp, snaps = retrain.retrain(cfg, steps)
        except Exception as e:  # a run this version cannot rebuild: say so, keep going
            figs.append((f"replay of {row.run} skipped: {e}", ""))
            continue
        probe = exp.dataset.x_train[: cfg.train.probe_size]
        zs = {s: retrain.forward(exp, p, probe)["z"] for s, p in snaps.items()}
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
                    return retrain.forward(exp, params, x)["probs"][:, 1]

                plots.decision_boundary(predict, x_raw, ds.y_test, ds.mean, ds.std, ax=ax,
                                        title=f"{row.activation} d{row.depth}")
            for ax in list(axes.flat)[len(boundary):]:
                ax.set_visible(False)
            fig.tight_layout()
        plots.savefig(fig, out / "decision_boundary.png")
        figs.append(("Decision boundaries (test points overlaid)", "decision_boundary.png"))
    return figs


# the step-0 records compared with the mean-field theory: the backward signal is delta_norm
# where logged, else grad_norm scaled by grad_norm_scale
SIGNAL = ("q", "c", "delta_norm", "grad_norm")
MAX_SETTINGS = 5  # settings drawn per activation (all of them go to signal_propagation.csv)


def input_statistics(cfg: dict[str, Any]) -> tuple[float, float, int]:
    """(q0, c0, fan-in) of a run's probe batch, as the first layer sees it.

    q0 = mean x^2 over the probe examples and input features, c0 = mean cosine of the
    probe pairs (2i, 2i + 1), i < K (the pairs the `c` metric averages over).
    """
    from actlab import data
    from actlab.measure import metrics

    ds_cfg = dict(cfg["dataset"])
    ds = data.load(ds_cfg.pop("name"), **ds_cfg)
    x = np.asarray(ds.x_train[: cfg["train"]["probe_size"]], np.float64)
    x = x.reshape(len(x), -1)
    k = metrics.num_pairs(len(x))
    a, b = x[0:2 * k:2], x[1:2 * k:2]
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    return float(np.mean(x * x)), float(cos.mean()) if k else float("nan"), x.shape[1]


def grad_norm_scale(q: np.ndarray, q0: float, n_in: int, width: int, sigma_w2: float,
                    sigma_b2: float) -> np.ndarray:
    """Per hidden layer l, sqrt(fan_in_l <x_l^2> + 1): its gradient norm per unit backward signal.

    For one example a Dense layer's kernel gradient is the outer product x_l delta_l^T and its
    bias gradient delta_l, so |grad theta_l|^2 = (|x_l|^2 + 1) |delta_l|^2 exactly, with
    |x_l|^2 = fan_in_l <x_l^2>: layer 0 sees the data (fan-in n_in, <x^2> = q0), layer l >= 1
    sees phi(z_{l-1}) (fan-in `width`, <phi^2> = (q_l - sigma_b2) / sigma_w2 by the length
    map, from the measured q_l). A batch gradient also sums cross-example terms that this
    per-example scaling leaves in, so it is a fallback for runs without delta_norm.
    """
    m = np.maximum((np.asarray(q, np.float64)[1:] - sigma_b2) / sigma_w2, 0.0)
    return np.sqrt(np.concatenate([[n_in * q0], width * m]) + 1.0)


def layer_variances(cfg: dict[str, Any], spec: activations.Spec, n_in: int,
                    gain: float | None = None) -> tuple[float, float, float]:
    """(sigma_w2 of the first layer, of the other hidden layers, sigma_b2) of an MLP's init.

    As models.initializers draws them: Var w x fan_in = gain^2 sigma_w2 with init.sigma_w2 set (any
    scheme) or init=critical (theory.critical_sigma_w2), else the scheme's own: he 2, lecun
    1, glorot 2 fan_in / (fan_in + fan_out), orthogonal min(1, fan_in / fan_out); `gain`
    (a vmapped init.gain) replaces init.gain.
    """
    from actlab import theory

    ini, width = cfg["init"], int(cfg["model"]["width"])
    g2 = float(ini.get("gain", 1.0) if gain is None else gain) ** 2
    sb = float(ini.get("sigma_b2") or 0.0)
    name = activations.recommended_init(spec.name) if ini["name"] == "auto" else ini["name"]
    sw = theory.critical_sigma_w2(spec, sb) if name == "critical" else ini.get("sigma_w2")
    if sw is not None:
        return g2 * float(sw), g2 * float(sw), sb
    first = {"he": 2.0, "lecun": 1.0, "glorot": 2.0 * n_in / (n_in + width),
             "orthogonal": min(1.0, n_in / width)}[name]
    hidden = 1.0 if name in ("glorot", "orthogonal") else first
    return g2 * first, g2 * hidden, sb


def _theory_applies(cfg: dict[str, Any]) -> str | None:
    """Why the mean-field prediction does not describe this run (None: it does)."""
    m = cfg.get("model") or {}
    if m.get("name") != "mlp":
        return f"model={m.get('name')}: the theory is for fully connected layers"
    if m.get("norm", "none") != "none" or m.get("residual"):
        return "normalisation or residual connections"
    acts = m.get("activations")
    if acts and len(set(acts)) > 1:
        return "one activation per layer"
    return None


def signal_rows(df: pd.DataFrame) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """Predicted and measured step-0 signal propagation for each run member with q records.

    Returns ({activation label: [setting, ...]}, {why skipped: [run, ...]}). A setting is a
    dict with run, depth, sigma_w2 (hidden layers), sigma_w2_first, sigma_b2, q0, c0, the
    vmapped values, `predicted` (theory.predict_layers), `measured` (the member's step-0
    rows, seeds together) and `grad_scale` (grad_norm_scale of its measured q, for runs
    without delta_norm); settings are sorted by sigma_w2.
    """
    from actlab import theory
    from actlab.analysis.plots import theory as plots_theory

    s0 = df[(df["step"] == 0) & df["layer"].notna() & df["metric"].isin(SIGNAL)]
    rows: dict[str, list[dict]] = {}
    notes: dict[str, list[str]] = {}
    stats: dict[str, tuple[float, float, int]] = {}
    for run in dict.fromkeys(s0.loc[s0["metric"] == "q", "run"]):
        part = s0[s0["run"] == run]
        cfg = analysis.run_config(run)
        why = _theory_applies(cfg)
        if why:
            notes.setdefault(why, []).append(run)
            continue
        act = dict(cfg["activation"])
        name = (cfg["model"].get("activations") or [act.pop("name")])[0]
        act.pop("name", None)
        axes = [c for c in part.columns if c.startswith(("init.gain", "activation."))
                and part[c].notna().any()]
        groups = part.groupby(axes, dropna=False, sort=True) if axes else [((), part)]
        try:
            key = json.dumps([cfg["dataset"], cfg["train"]["probe_size"]], sort_keys=True)
            if key not in stats:
                stats[key] = input_statistics(cfg)
            q0, c0, n_in = stats[key]
        except Exception as e:  # a dataset not available here: say so, keep going
            notes.setdefault(f"its inputs: {e}", []).append(run)
            continue
        for vals, g in groups:
            member = dict(zip(axes, vals if isinstance(vals, tuple) else (vals,), strict=True))
            params = {**act, **{k.split(".", 1)[1]: v for k, v in member.items()
                                if k.startswith("activation.")}}
            try:
                spec = activations.spec(name, **params)
                if spec.info.gated:
                    raise theory.TheoryError("a gated unit is not elementwise")
                w0, w, b = layer_variances(cfg, spec, n_in, member.get("init.gain"))
                depth = int(cfg["model"]["depth"])
                # layer 0 sees the inputs through its own variance: q_1 = w0 q0 + b
                pred = theory.predict_layers(spec, w, b, q0 * w0 / w, depth, c0=c0)
            except (ValueError, KeyError) as e:  # TheoryError and ActivationError included
                notes.setdefault(str(e), []).append(run)
                continue
            q = plots_theory.profile(g).get("q", np.array([]))
            scale = (grad_norm_scale(q, q0, n_in, int(cfg["model"]["width"]), w, b)
                     if len(q) == depth else None)
            rows.setdefault(analysis.activation_label(cfg), []).append(
                {"run": run, "depth": depth, "sigma_w2": w, "sigma_w2_first": w0,
                 "sigma_b2": b, "q0": q0, "c0": c0, **member, "predicted": pred,
                 "measured": g, "grad_scale": scale})
    for settings in rows.values():
        settings.sort(key=lambda st: (st["sigma_w2"], st["sigma_b2"], st["depth"]))
    return rows, notes


def _setting_label(st: dict, depths: bool) -> str:
    extra = "".join(f", {k.split('.', 1)[1]}={v:g}" for k, v in st.items()
                    if k.startswith("activation."))
    return (rf"$\sigma_w^2$={st['sigma_w2']:.3g}, $\sigma_b^2$={st['sigma_b2']:.3g}"
            + (f", depth {st['depth']}" if depths else "") + extra)


def _shown(settings: list[dict]) -> list[dict]:
    """At most MAX_SETTINGS: the deepest runs first, then spread over sigma_w2."""
    if len(settings) > MAX_SETTINGS:
        deepest = max(st["depth"] for st in settings)
        settings = [st for st in settings if st["depth"] == deepest]
    if len(settings) > MAX_SETTINGS:
        pick = np.unique(np.round(np.linspace(0, len(settings) - 1, MAX_SETTINGS)).astype(int))
        settings = [settings[i] for i in pick]
    return settings


def measured_profile(setting: dict) -> dict[str, Any]:
    """plots_theory.profile of a setting's step-0 records: delta_norm, else scaled grad_norm."""
    from actlab.analysis.plots import theory as plots_theory

    return plots_theory.profile(setting["measured"], grad_scale=setting.get("grad_scale"))


def signal_table(rows: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per (activation, setting, layer): predicted and measured q, c, backward signal.

    grad_* is the backward signal relative to the last hidden layer; grad_measured_from
    names its source (plots.theory.GRAD_FROM): delta_norm, or grad_norm_scaled.
    """
    from actlab.analysis.plots import theory as plots_theory

    out = []
    for act, settings in rows.items():
        for st in settings:
            pred, meas = plots_theory.profile(st["predicted"]), measured_profile(st)
            ident = {k: v for k, v in st.items()
                     if k not in ("predicted", "measured", "grad_scale")}
            for layer in range(st["depth"]):
                row = {"activation": act, **ident, "layer": layer}
                for q in ("q", "c", "grad"):
                    for kind, prof in (("predicted", pred), ("measured", meas)):
                        v = prof.get(q)
                        row[f"{q}_{kind}"] = float(v[layer]) if v is not None and layer < len(
                            v) else np.nan
                row["grad_measured_from"] = meas.get("grad_from")
                out.append(row)
    return pd.DataFrame(out)


def signal_figure(rows: dict[str, list[dict]]) -> Figure:
    """plots_theory.signal_propagation_rows of `signal_rows`: a row per activation."""
    from actlab.analysis.plots import theory as plots_theory

    panels = {}
    for act, settings in rows.items():
        shown = _shown(settings)
        depths = len({st["depth"] for st in shown}) > 1
        panels[act] = [(_setting_label(st, depths), st["predicted"], measured_profile(st))
                       for st in shown]
    return plots_theory.signal_propagation_rows(panels)


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
    logged = set(df.loc[df["layer"].notna(), "metric"])  # train.metrics chooses the families
    if "grad_norm" in logged:
        add("Gradient norm per layer at initialisation", "grad_norm_init.png",
            plots.layer_profile(df, "grad_norm", step="first"))
        add("Gradient norm per layer at the end of training", "grad_norm_final.png",
            plots.layer_profile(df, "grad_norm", step="last"))
        add("Gradient norm over training (layer x step)", "grad_norm_heatmap.png",
            plots.layer_heatmap(df, "grad_norm"))
    if logged & {"dead_frac", "sat_frac"}:
        add("Dead and saturated units per layer over training", "dead_saturated.png",
            plots.dead_saturated(df))
    add("Learning curves (mean over seeds, band: 1 std)", "learning_curves.png",
        plots.learning_curves(df))
    if summ["target"].notna().any():
        add("Convergence speed", "convergence.png", plots.convergence(summ))
    if plots_tasks.has_tasks(df):
        add("Task sequence: accuracy on each task when its training ends (solid) and on the "
            "first task at that moment (dotted)", "task_accuracy.png",
            plots_tasks.task_accuracy(df))
    tables = []
    for title, name, fig, frame in plots_width.report_items(df, summ):
        add(title, name, fig)
        frame.to_csv(out / name.replace(".png", ".csv"), index=False)
        tables.append((title.partition(":")[0], frame))
    if ((df["metric"] == "hessian/top_eig") & df["layer"].isna()).any():
        add("Sharpness (top Hessian eigenvalue) against the gradient-descent limit 2/lr "
            "(dashed)", "sharpness.png", plots_probes.sharpness(df))
    rows, notes = signal_rows(df)
    if rows:
        signal = signal_table(rows)
        signal.to_csv(out / "signal_propagation.csv", index=False)
        add("Signal propagation at initialisation: mean-field theory vs measured",
            "signal_propagation.png", signal_figure(rows))
        backward = {"delta_norm": "delta_norm/l (the backward signal |d loss_b / d z_l| that "
                                  "chi_1 scales per layer)",
                    "grad_norm_scaled": "grad_norm/l / sqrt(fan_in_l * mean input_l^2 + 1) "
                                        "(no delta_norm logged: the gradient norm per unit "
                                        "backward signal, layer 0's fan-in being the data's; "
                                        "approximate, as it keeps cross-example terms)"}
        used = [backward.get(k, str(k)) for k in dict.fromkeys(signal["grad_measured_from"])]
        figs.append(("Lines: actlab.theory.predict_layers from each run's sigma_w2, sigma_b2 "
                     "and its probe inputs' q0 and c0; markers: the step-0 records q/l, c/l "
                     f"and, relative to the last hidden layer, {' or '.join(used)}, mean over "
                     "seeds. Numbers for every setting (grad_measured_from says which): "
                     "signal_propagation.csv.", ""))
    for why, runs in notes.items():
        figs.append((f"No mean-field prediction for {len(runs)} run(s) ({why}): "
                     f"{', '.join(runs[:3])}{' ...' if len(runs) > 3 else ''}", ""))
    if replay:
        figs += _replay_figures(summ, out, max_replays)

    def fmt(x):
        return f"{x:.4g}" if isinstance(x, float) else x

    body = [f"<h1>actlab report</h1><p class=note>{html.escape(str(path))}: "
            f"{summ['run'].nunique()} runs, {len(summ)} members</p>",
            "<h2>Comparison</h2>", table.to_html(index=False, float_format=fmt, na_rep="-")]
    for title, frame in tables:  # the width section's numbers (also as CSV beside the PNGs)
        body += [f"<h2>{html.escape(title)}</h2>",
                 frame.to_html(index=False, float_format=fmt, na_rep="-")]
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
