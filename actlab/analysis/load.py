"""Run and sweep directories -> tidy pandas DataFrames.

Reads only the files of the run-directory contract (metrics.jsonl,
summary.json, .hydra/config.yaml, and hessian_density.jsonl for load_density).
Each run's tidy frame is cached next to its metrics as Parquet, keyed by the
size and mtime of metrics.jsonl, so re-loading a sweep of hundreds of runs
takes a moment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from actlab.files import DENSITY_FILE, atomic_write, read_metrics

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CACHE = ".actlab_cache.parquet"
# Config axes carried as columns: column -> path in the resolved config.
AXES = {
    "activation": ("activation", "name"),
    "depth": ("model", "depth"),
    "width": ("model", "width"),
    "dim": ("model", "dim"),
    "param": ("model", "param"),
    "model": ("model", "name"),
    "norm": ("model", "norm"),
    "head": ("model", "head"),
    "dataset": ("dataset", "name"),
    "optimizer": ("optimizer", "name"),
    "lr": ("optimizer", "lr"),
    "init": ("init", "name"),
    "batch_size": ("train", "batch_size"),
    "plasticity": ("plasticity", "method"),
}
_LAYER_KEY = re.compile(r"^(.+)/(\d+)$")
Paths = str | os.PathLike | Iterable[str | os.PathLike]


def run_dirs(paths: Paths) -> list[Path]:
    """Every run directory (one holding metrics.jsonl) under the given path(s), sorted."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: set[Path] = set()
    for p in map(Path, paths):
        if (p / METRICS).is_file():
            found.add(p)
        elif p.is_dir():
            found.update(m.parent for m in p.rglob(METRICS))
        else:
            raise FileNotFoundError(f"{p} is neither a run directory nor a sweep directory")
    return sorted(found, key=_natural)


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def run_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The resolved config of a run (summary.json, else .hydra/config.yaml)."""
    run_dir = Path(run_dir)
    if (run_dir / SUMMARY).is_file():
        cfg = json.loads((run_dir / SUMMARY).read_text()).get("config")
        if cfg:
            return cfg
    hydra = run_dir / ".hydra" / "config.yaml"
    return yaml.safe_load(hydra.read_text()) if hydra.is_file() else {}


def activation_label(cfg: dict[str, Any]) -> str:
    """'gelu', 'gelu(approximate=True)', 'leaky_relu(alpha=0.1)'; per-layer lists joined by '+'."""
    acts = (cfg.get("model") or {}).get("activations")
    if acts:
        return "+".join(acts)
    a = dict(cfg.get("activation") or {})
    name = a.pop("name", "?")
    from actlab import activations  # defaults are not worth showing

    try:
        defaults = activations.info(name).params
    except ValueError:
        defaults = {}
    extra = {k: v for k, v in a.items() if defaults.get(k, None) != v and v is not False}
    return name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())) + ")"
                   if extra else "")


def axes(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config axes of a run as a flat dict of column values."""
    out: dict[str, Any] = {}
    for col, (sec, key) in AXES.items():
        out[col] = (cfg.get(sec) or {}).get(key)
    out["activation"] = activation_label(cfg)
    return out


def _tidy_uncached(run_dir: Path) -> pd.DataFrame:
    recs, _ = read_metrics(run_dir / METRICS)  # a torn last line of a killed run is skipped
    if not recs:
        return pd.DataFrame(columns=["step", "seed", "wall_time", "metric", "layer", "value"])
    wide = pd.DataFrame.from_records(recs)
    # vmapped hyperparameters ("optimizer.lr") identify a member, like its seed
    ids = ["step", "seed", "wall_time"] + [c for c in wide.columns if "." in c and "/" not in c]
    long = wide.melt(id_vars=ids, var_name="key", value_name="value")
    long = long.dropna(subset=["value"])
    parts = long["key"].str.extract(_LAYER_KEY)
    long["metric"] = parts[0].fillna(long["key"])
    long["layer"] = pd.to_numeric(parts[1]).astype("Int64")
    return long.drop(columns="key").reset_index(drop=True)


def _tidy(run_dir: Path, cache: bool) -> pd.DataFrame:
    src = run_dir / METRICS
    st = src.stat()
    stamp = f"{st.st_size}-{st.st_mtime_ns}"
    cache_file = run_dir / CACHE
    if cache and cache_file.is_file():
        try:
            df = pd.read_parquet(cache_file)
            if len(df) and df["_stamp"].iat[0] == stamp:
                return df.drop(columns="_stamp")
        except (OSError, ValueError, KeyError):
            pass
    df = _tidy_uncached(run_dir)
    if cache:
        try:
            df.assign(_stamp=stamp).to_parquet(cache_file, index=False)
        except OSError:  # read-only run directory: no cache, no problem
            pass
    return df


def load_run(run_dir: str | os.PathLike, cache: bool = True) -> pd.DataFrame:
    """One row per (step, seed, layer, metric) of one run, with its config axes as columns.

    `layer` is the hidden-layer index for per-layer metrics and <NA> for scalar
    ones (train/loss, eval/acc, grad_norm/out, ...).
    """
    run_dir = Path(run_dir)
    df = _tidy(run_dir, cache)
    cfg = run_config(run_dir)
    for col, v in axes(cfg).items():
        if col == "lr" and "optimizer.lr" in df:
            df[col] = df["optimizer.lr"]
        else:
            df[col] = v
    df["run"] = str(run_dir)
    return df


def load_sweep(paths: Paths, cache: bool = True) -> pd.DataFrame:
    """load_run over every run under `paths` (a run, a multirun tree, or a list), concatenated."""
    frames = [load_run(d, cache) for d in run_dirs(paths)]
    if not frames:
        raise FileNotFoundError(f"no run directories (with {METRICS}) under {paths}")
    return pd.concat(frames, ignore_index=True)


def load_density(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The SLQ density records of a run directory (hessian_density.jsonl) as a frame.

    One row per (step, member): step, seed, the member's vmapped values (columns such
    as optimizer.lr), and `nodes`, `weights` as float arrays [samples, iters] (NaN
    where the measurement was not finite). Where a resumed run measured a step twice,
    the later line is kept. Empty without the file.
    """

    lines, _ = read_metrics(Path(run_dir) / DENSITY_FILE)
    if not lines:
        return pd.DataFrame(columns=["step", "seed", "nodes", "weights"])
    df = pd.DataFrame.from_records(lines)
    ids = [c for c in df.columns if c not in ("nodes", "weights")]
    df = df.drop_duplicates(subset=ids, keep="last").reset_index(drop=True)
    for c in ("nodes", "weights"):
        df[c] = [np.asarray(v, dtype=np.float64) for v in df[c]]
    return df


def summaries(paths: Paths) -> pd.DataFrame:
    """One row per run member: config axes, seed, status and the convergence summary."""
    return _summary_rows(run_dirs(paths))


def _summary_rows(dirs: Iterable[Path], failed_rows: bool = False) -> pd.DataFrame:
    rows = []
    for d in dirs:
        try:
            s = json.loads((d / SUMMARY).read_text()) if (d / SUMMARY).is_file() else {}
        except (OSError, json.JSONDecodeError):
            s = {}
        cfg = s.get("config") or run_config(d)
        # a job directory without a final summary: running now, or stopped (a re-run resumes it)
        base = {"run": str(d), **axes(cfg), "status": s.get("status", "running")}
        if failed_rows:
            base["overrides"] = " ".join(_overrides(d))
        target = (cfg.get("train") or {}).get("target")
        for m in s.get("seeds", []):
            row = {**base, "target": target, **m}
            if "optimizer.lr" in m:
                row["lr"] = m["optimizer.lr"]
            rows.append(row)
        if failed_rows and not s.get("seeds"):
            rows.append({**base, "target": target, "error": s.get("error")})
    return pd.DataFrame(rows)


def _overrides(run_dir: Path) -> list[str]:
    """The Hydra overrides a job was launched with (.hydra/overrides.yaml), [] if unknown."""
    ov = run_dir / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in yaml.safe_load(ov.read_text()) or []] if ov.is_file() else []
    except (OSError, yaml.YAMLError):
        return []


SWEEP_SUMMARY = "sweep_summary.csv"
STATUSES = ("completed", "diverged", "failed", "running", "never started")


def write_sweep_summary(sweep_dir: str | os.PathLike) -> Path:
    """sweep_summary.csv at the sweep root: one row per job x member (failed jobs: one row).

    Columns: run, config axes, the job's overrides, status, the member's seed and
    swept values, and its convergence summary. `status` is the job's: `completed`
    (at least one member trained to the end without diverging), `diverged` (every
    member diverged: summary.json's diverged_at set for all), `failed` (an error
    stopped the job), `running` (a job directory without a final summary: running
    now or stopped, to be resumed by a re-run) or `never started` (a job of the
    sweep definition recorded in sweep.yaml that has no directory yet; one row,
    with its overrides). Written atomically, so jobs that finish at the same time
    never leave a half-written file.
    """
    from actlab.runs.sweeps import recorded_jobs

    root = Path(sweep_dir)
    dirs = sorted({p.parent for p in root.rglob(SUMMARY)} |
                  {p.parent.parent for p in root.rglob(".hydra/config.yaml")}, key=_natural)
    dirs = [d for d in dirs if d != root]
    df = _summary_rows(dirs, failed_rows=True)
    started = {tuple(sorted(_overrides(d))) for d in dirs}

    def never_started(job: dict) -> bool:  # by its directory, else by its overrides
        if job.get("dir") is not None:
            return root / str(job["dir"]) not in set(dirs)
        return tuple(sorted(job["overrides"])) not in started

    pending = [{"run": str(root / str(j["dir"])) if j.get("dir") is not None else "",
                "status": "never started", "overrides": " ".join(j["overrides"])}
               for j in recorded_jobs(root) if never_started(j)]
    if pending:  # in job order among the others
        df = pd.concat([df, pd.DataFrame(pending)], ignore_index=True)
        runs = df["run"].fillna("").astype(str)
        order = sorted(range(len(df)), key=lambda i: (not runs.iat[i], _natural(Path(runs.iat[i]))))
        df = df.iloc[order].reset_index(drop=True)
    out = root / SWEEP_SUMMARY
    atomic_write(out, lambda f: df.to_csv(f, index=False), sync=False)
    return out


def wide(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one per-layer metric pivoted to (run, seed, step) x layer."""
    sel = df[(df["metric"] == metric) & df["layer"].notna()]
    return sel.pivot_table(index=["run", "seed", "step"], columns="layer", values="value")


def comparison_table(paths: Paths, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """activation x depth: final acc, steps_to_target, dead_frac, first/last grad-norm ratio."""
    summ = summaries(paths)
    df = load_sweep(paths) if df is None else df
    last = df[df["step"] == df.groupby("run")["step"].transform("max")]
    per_run = []
    for run, g in last.groupby("run"):
        gn = g[g["metric"] == "grad_norm"].groupby("layer")["value"].mean()
        dead = g[g["metric"] == "dead_frac"]["value"].mean()
        ratio = float(gn.iloc[0] / gn.iloc[-1]) if len(gn) and gn.iloc[-1] > 0 else np.nan
        per_run.append({"run": run, "dead_frac": dead, "grad_ratio_first_last": ratio})
    merged = summ.merge(pd.DataFrame(per_run), on="run", how="left")
    rows = []
    for (act, depth), g in merged.groupby(["activation", "depth"], sort=True):
        acc = g["final_eval_acc"].astype(float)
        stt = g["steps_to_target"].dropna().astype(float)
        rows.append({
            "activation": act, "depth": depth, "members": len(g),
            "final_eval_acc": acc.mean(), "final_eval_acc_std": acc.std(ddof=0),
            "steps_to_target": stt.mean() if len(stt) else np.nan,
            "reached_target": f"{len(stt)}/{len(g)}",
            "dead_frac": g["dead_frac"].mean(),
            "grad_ratio_first_last": g["grad_ratio_first_last"].mean(),
        })
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): sum over confidence bins of |accuracy - confidence| x share.

    Confidence is the top class probability (for one-vs-all heads the largest
    sigmoid, which need not sum to 1 with the others); bins are equal-width on [0, 1].
    """
    probs = np.asarray(probs, float)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == np.asarray(labels)).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)
