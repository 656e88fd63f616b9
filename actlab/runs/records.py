"""Host side of the measurements: records, per-member convergence summaries, aggregates.

`to_records` flattens one log step's metrics into one record per member;
`Tracker` turns a member's records into its convergence summary; `aggregate`
gives mean, std and a 95% bootstrap interval over members (the plots import
`bootstrap_ci` from here). `ArrayFile` holds a probe's arrays (the Hessian's SLQ spectral density)
of each probe step, arrays that do not fit a record of scalars.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from actlab.config import Config, Target
from actlab.config.axes import LearningRate
from actlab.files import DENSITY_FILE, atomic_write, clean, read_metrics  # noqa: F401

PER_MEMBER_SUMMARY = ("final_train_loss", "final_eval_loss", "final_eval_acc", "best_eval_acc",
                      "steps_to_target", "time_to_target", "time_to_target_excl_compile",
                      "loss_auc", "diverged_at", "eos_step", "task_acc_last10", "task_acc_slope",
                      "final_eval_bpb", "best_eval_bpb")
INTEGER_KEYS = ("task", "task_end/task")  # record fields that are counts, not measurements
TASK_LISTS = ("task_acc", "task_first_acc")  # per member, one value per finished task

SHARPNESS = "hessian/top_eig"


def bootstrap_ci(values: Iterable[float], level: float = 0.95, n: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return (np.nan, np.nan)
    if len(v) == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    means = rng.choice(v, (n, len(v)), replace=True).mean(1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


class Tracker:
    """Convergence summary of one member, updated record by record.

    final_eval_bpb, best_eval_bpb: the last and the lowest eval/bpb (next-token sets; bits
    per token, lower is better), None for other datasets.

    eos_step: the first logged step at which the sharpness hessian/top_eig reaches 2/lr,
    the stability limit of gradient descent with rate lr (Cohen et al. 2021); lr is the
    member's own (a vmapped optimizer.lr) or `lr` (optimizer.lr; with a schedule, its
    peak). None while it has not, or without an lr.
    """

    def __init__(self, member: dict[str, Any], target: Target | None,
                 lr: float | None = None):
        self.member, self.target = dict(member), target
        self.lr = member.get("optimizer.lr", lr)
        self.compile_seconds = 0.0
        self.losses: list[float] = []
        self.s: dict[str, Any] = dict.fromkeys(PER_MEMBER_SUMMARY)
        self.tasks: dict[str, dict[int, float | None]] = {}

    def _task_summary(self) -> None:
        """Per-task final accuracy, its mean over the last 10% of the tasks (at least one)
        and its least-squares slope over the task index (per task)."""
        accs = self.tasks.get("task_acc", {})
        for field in TASK_LISTS:
            values = self.tasks.get(field, {})
            self.s[field] = [values[t] for t in sorted(values)]
        done = [(t, a) for t, a in sorted(accs.items()) if a is not None]
        if not done:
            return
        last = max(1, round(0.1 * len(accs)))
        tail = [a for t, a in done if t >= len(accs) - last]
        self.s["task_acc_last10"] = float(np.mean(tail)) if tail else None
        if len(done) > 1:
            ts, vs = np.asarray([t for t, _ in done], float), np.asarray([a for _, a in done])
            self.s["task_acc_slope"] = float(np.polyfit(ts, vs, 1)[0])

    def update(self, r: dict[str, Any]) -> None:
        if r.get("train/loss") is not None:
            self.losses.append(r["train/loss"])
            self.s["final_train_loss"] = r["train/loss"]
            self.s["loss_auc"] = float(np.mean(self.losses))
        if "eval/acc" in r:
            self.s["final_eval_loss"], self.s["final_eval_acc"] = r["eval/loss"], r["eval/acc"]
            best = self.s["best_eval_acc"]
            if r["eval/acc"] is not None and (best is None or r["eval/acc"] > best):
                self.s["best_eval_acc"] = r["eval/acc"]
        if "eval/bpb" in r:  # next-token sets: bits per token, lower is better
            self.s["final_eval_bpb"] = r["eval/bpb"]
            best = self.s["best_eval_bpb"]
            if r["eval/bpb"] is not None and (best is None or r["eval/bpb"] < best):
                self.s["best_eval_bpb"] = r["eval/bpb"]
        t = self.target
        if (t and self.s["steps_to_target"] is None and r.get(t.key) is not None
                and t.met(r[t.key])):
            self.s["steps_to_target"], self.s["time_to_target"] = r["step"], r["wall_time"]
            self.s["time_to_target_excl_compile"] = round(r["wall_time"] - self.compile_seconds,
                                                          4)
        if r.get("task_end/task") is not None:
            finished = int(r["task_end/task"])
            for key, field in (("task_end/acc", "task_acc"), ("task_end/first_acc",
                                                              "task_first_acc")):
                self.tasks.setdefault(field, {})[finished] = r.get(key)
            self._task_summary()
        sharp = r.get(SHARPNESS)
        if (self.s["eos_step"] is None and self.lr and sharp is not None
                and sharp >= 2.0 / self.lr):
            self.s["eos_step"] = r["step"]

    def summary(self) -> dict[str, Any]:
        return {**self.member, **self.s}


def aggregate(members: list[dict[str, Any]], ci: bool = True) -> dict[str, Any]:
    """Mean, std, count and 95% bootstrap interval of the mean over members, per field.

    With ci=False (the summaries written while training runs) the interval is
    left out: resampling at every log step would take host time from training.
    """
    out: dict[str, Any] = {}
    for k in PER_MEMBER_SUMMARY:
        vals = [m[k] for m in members if isinstance(m.get(k), (int, float))]
        out[k] = {"mean": float(np.mean(vals)) if vals else None,
                  "std": float(np.std(vals)) if vals else None, "n": len(vals),
                  "ci95": list(bootstrap_ci(vals)) if vals and ci else None}
    return out


def to_records(m: dict[str, np.ndarray], step: int, wall: float,
               members: list[dict[str, Any]], on: Mapping[str, bool]) -> list[dict[str, Any]]:
    """Flatten one chunk's metrics ([members, ...] arrays) into per-member records.

    Each record carries the member's seed and its vmapped hyperparameter values.
    Members that diverged before `step` are frozen and get no more records.
    Keys of switched-off measurements (`<name>/...` with on[name] false) are left out.
    """
    off = tuple(f"{k}/" for k, v in on.items() if not v)
    names: list[str] = []
    cols = []
    for k, v in m.items():  # one [members, keys] table, converted to Python floats at once
        if k == "diverged_at" or (off and k.startswith(off)):
            continue
        v = np.asarray(v)
        if v.ndim == 1:
            names.append(k)
            cols.append(v[:, None])
        else:
            flat = v.reshape(v.shape[0], -1)
            names += [f"{k}/{l}" for l in range(flat.shape[1])]
            cols.append(flat)
    table = np.concatenate(cols, 1).astype(np.float64).tolist() if cols else [[]] * len(members)
    div = np.asarray(m["diverged_at"])
    records = []
    for i, member in enumerate(members):
        if 0 <= div[i] < step:
            continue
        r: dict[str, Any] = {"step": step, **clean(member), "wall_time": round(wall, 4),
                             "member": i}
        r.update(zip(names, (x if math.isfinite(x) else None for x in table[i]), strict=True))
        for k in INTEGER_KEYS:
            if r.get(k) is not None:
                r[k] = int(r[k])
        records.append(r)
    return records


def run_group(config: Config) -> str:
    """A short name of the configuration (W&B group): what differs from the defaults."""
    lr_swept = any(isinstance(a, LearningRate) for a in config.train.vmap)
    parts = [config.activation.name, config.model.name, f"d{config.model.depth}",
             config.dataset.name, f"{config.optimizer.name}"
             + (f"@{config.optimizer.lr:g}" if not lr_swept else "")]
    parts += [f"{k}={v}" for k, v in sorted(config.activation.params.items())]
    return " ".join(parts)


class ArrayFile:
    """A probe's array file in a run directory: one JSON line per (probe step, member).

    Each line holds the step, the member's seed and vmapped values (as its records do),
    and one list per array the probe names (the Hessian probe's `nodes` and `weights`,
    [samples][iters] lists: the SLQ quadrature of its spectral density, in
    hessian_density.jsonl). Opening it keeps only the lines before step `start` (a
    resumed run), or none (a fresh run).
    """

    def __init__(self, path: str | os.PathLike, start: int | None = None):
        self.path = Path(path)
        if self.path.exists():
            kept = [] if start is None else [r for r in read_metrics(self.path)[0]
                                             if r.get("step", start) < start]
            if kept:
                atomic_write(self.path, lambda f: f.write(
                    "".join(json.dumps(r) + "\n" for r in kept)))
            else:
                self.path.unlink()

    def write(self, lines: list[dict[str, Any]]) -> None:
        """Append lines (flushed when the file closes, at once)."""
        if lines:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(clean(r)) + "\n" for r in lines))


def array_lines(arrays: dict[str, np.ndarray], fields: Mapping[str, str], step: int,
                records: list[dict[str, Any]],
                members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ArrayFile lines of one probe step: one per member that has a record there.

    `arrays` maps each output key of `fields` (key -> the line's field) to [members, ...].
    """
    return [{"step": step, **clean(members[r["member"]]),
             **{field: np.asarray(arrays[key][r["member"]], np.float64).tolist()
                for key, field in fields.items()}}
            for r in records]
