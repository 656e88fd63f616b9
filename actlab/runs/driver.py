"""The driver: `run(config, run_dir)` trains every member and writes the run directory.

It reads like a loop over program calls: dispatch call t, then fetch and write
the records of call t-1 while call t runs. The pieces it drives:

- actlab.engine.experiment: config made concrete (data, model, head, optimizer, members)
- actlab.engine.step: the pure training step and measurements; actlab.engine.loop: the
  compiled program (several log steps per call, members mapped)
- actlab.engine.cadence: which steps are measured, evaluated, probed, checkpointed
- actlab.runs.records: records, per-member convergence, aggregates
- actlab.runs.rundir: the run directory's lifecycle; actlab.sinks.base: where records go
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from actlab import files
from actlab import sinks as writers
from actlab.config import Config
from actlab.data import tasks
from actlab.engine import cadence, devices, loop
from actlab.engine.experiment import Experiment, build, device_data, initial_state, resolved_init
from actlab.engine.resolve import resolve
from actlab.measure import metrics, probes
from actlab.runs import checkpoint, rundir
from actlab.runs.records import (
    ArrayFile,
    Tracker,
    aggregate,
    array_lines,
    run_group,
    to_records,
)
from actlab.runs.rundir import RunDirError

__all__ = ["run", "build", "RunDirError", "enable_compilation_cache", "Experiment"]

MODES = ("fresh", "resume", "done")  # how a run starts (rundir.prepare)
SUMMARY_INTERVAL = 1.0  # seconds between the summary.json rewrites made while a run trains


def enable_compilation_cache(path: str | None = None) -> None:
    """Turn on JAX's persistent compilation cache (default ~/.cache/actlab/jax)."""
    path = path or os.environ.get("ACTLAB_JAX_CACHE",
                                  str(Path.home() / ".cache" / "actlab" / "jax"))
    if path in ("", "0", "off"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def per_call(config: Config) -> int:
    """Log steps per program call (train.log_steps_per_call, auto resolved)."""
    k = config.train.log_steps_per_call
    return cadence.auto_per_call(config.train.log_every) if k == "auto" else int(k)


def preact_histograms(hists: dict[str, np.ndarray], k: int) -> dict[str, writers.Histograms]:
    """Slot k's pre-activation histograms (metrics.HIST_KEYS, [members, slots, L, ...]) as
    `preact/<l>` -> Histograms over the members."""
    edges, counts, moments = (hists[key][:, k] for key in metrics.HIST_KEYS)
    return {f"preact/{l}": writers.Histograms(edges[:, l], counts[:, l], moments[:, l, 0],
                                              moments[:, l, 1], moments[:, l, 2])
            for l in range(edges.shape[1])}


class Recorder:
    """Turns each call's measurements into records, trackers, summaries and the bar."""

    def __init__(self, writer, trackers: list[Tracker], members: list[dict[str, Any]], bar,
                 summary: dict[str, Any], t0: float,
                 array_files: dict[str, ArrayFile] | None = None):
        self.writer, self.trackers, self.members = writer, trackers, members
        # the active probes with array outputs -> their files (None or empty: nowhere)
        self.array_files = array_files or {}
        self.bar, self.summary, self.t0 = bar, summary, t0
        self.summary_due = cadence.Every(SUMMARY_INTERVAL)
        self.last_wall = time.perf_counter() - t0

    def __call__(self, call: cadence.Call, measured: loop.Measurements, running: bool = True
                 ) -> np.ndarray:
        """Write the records of one call; return the members' diverged_at after it."""
        m = measured.fetch()  # one device-to-host transfer
        # arrays per probe or log step, not scalars: kept out of the records
        arrays = {name: {k: m.pop(k) for k in probes.get(name).arrays if k in m}
                  for name in self.array_files}
        hists = {k: m.pop(k) for k in metrics.HIST_KEYS if k in m}
        wall = time.perf_counter() - self.t0
        done, records = 0, []
        lines: dict[str, list] = {name: [] for name in self.array_files}
        for k, slot in enumerate(call.slots):  # wall times spread over the call's steps
            done += slot.n_plain + slot.apply
            at = self.last_wall + (wall - self.last_wall) * (
                done / call.steps_done if call.steps_done else 1.0)
            mk = {key: v[:, k] for key, v in m.items()}
            rec = to_records(mk, slot.step, at, self.members, slot.on)
            if hists:
                self.writer.write_histograms(slot.step, preact_histograms(hists, k))
            for name, arr in arrays.items():
                if arr and slot.on.get(name):
                    lines[name] += array_lines({key: v[:, k] for key, v in arr.items()},
                                               probes.get(name).arrays, slot.step, rec,
                                               self.members)
            div = np.asarray(mk["diverged_at"])
            for r in rec:
                self.trackers[r["member"]].update(r)
            for tr, dv in zip(self.trackers, div, strict=True):
                tr.s["diverged_at"] = int(dv) if dv >= 0 else None
            records += rec
        self.last_wall = wall
        self.writer.write_records(records)
        for name, f in self.array_files.items():
            f.write(lines[name])
        if running and self.summary_due():
            self.summary["seeds"] = [tr.summary() for tr in self.trackers]
            self.summary["aggregate"] = aggregate(self.summary["seeds"], ci=False)
            self.summary["wall_time"] = round(wall, 3)
            self.writer.write_summary(dict(self.summary))
        self._progress(m["train/loss"][:, len(call.slots) - 1], call.steps_done)
        return div

    def _progress(self, losses: np.ndarray, advance: int) -> None:
        losses = np.asarray(losses, dtype=float)
        finite = losses[np.isfinite(losses)]
        post = {"loss": f"{finite.mean():.3g}" if finite.size else "diverged"}
        accs = [tr.s["final_eval_acc"] for tr in self.trackers
                if tr.s["final_eval_acc"] is not None]
        if accs:
            post["eval_acc"] = f"{np.mean(accs):.3f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(advance)


def run(config: Config, run_dir: str | os.PathLike, progress: bool | None = None,
        sinks: list[writers.Writer] | None = None, label: str = "") -> dict[str, Any]:
    """Train every member of `config`, writing records and summaries into `run_dir`.

    With checkpoints on, a killed run continues from its latest checkpoint when
    started again in the same directory (train.resume=auto or true); records the
    killed process wrote after that checkpoint are dropped, so metrics.jsonl ends
    with exactly one record per (step, member). A completed run is not retrained.
    `sinks` replaces the writers named by logger.sinks.
    """
    t0 = time.perf_counter()
    config = resolve(config)
    run_dir = Path(run_dir)
    tc = config.train
    devices.initialize()
    primary = devices.primary()
    # process 0 decides how to start and prepares the directory; the others follow it
    mode, start = rundir.prepare(config, run_dir) if primary else ("fresh", None)
    code, at = devices.broadcast((MODES.index(mode), -1 if start is None else start))
    mode, start = MODES[code], None if at < 0 else at
    if mode == "done":
        summary: dict[str, Any] = json.loads((run_dir / files.SUMMARY_FILE).read_text())
        print(f"{run_dir}: already {summary['status']}, skipped", flush=True)
        return summary
    exp = build(config)
    members = exp.members
    trackers = [Tracker(m, tc.target, config.optimizer.lr) for m in members]
    summary = {"config": config.to_dict(), "status": "running", "seeds": [],
               "aggregate": {}}
    scheme = resolved_init(config, exp.specs)
    # the initialisation as drawn (init=critical: the edge-of-chaos sigma_w2 per layer)
    summary["init"] = {"name": scheme.name, "sigma_w2": scheme.sigma_w2,
                       "sigma_b2": scheme.sigma_b2, "gain": scheme.gain}
    d = device_data(exp)
    state = initial_state(exp, members)
    summary["num_params"] = int(sum(x[0].size for x in jax.tree.leaves(state.params)))
    # layer l's name: its module path for model=custom, else l
    summary["layers"] = list(exp.model.layer_names or map(str, range(exp.model.num_layers)))
    if exp.model.layer_names:  # model=custom: each layer's site, found or named
        summary["sites"] = [sp.name for sp in exp.model.specs]
    summary["tasks"] = tasks.describe(config.task)
    ckpt = checkpoint.Checkpoints(run_dir, tc.checkpoint_keep) if (
        tc.checkpoint_every > 0 or mode == "resume") else None
    if mode == "resume":
        assert ckpt is not None and start is not None  # a resume starts from a checkpoint
        state = ckpt.restore(start, state)
        kept = rundir.refeed_records(run_dir, start, members, trackers, rewrite=primary)
        t0 -= max((r["wall_time"] for r in kept), default=0.0)
        summary["resumed_from"] = start
        print(f"resuming {run_dir} from step {start}", flush=True)
    writer = (writers.NullWriter() if not primary else
              writers.AsyncWriter(writers.MultiWriter(sinks)) if sinks is not None else
              writers.make_writer(config.logger.sinks, run_dir, options=config.logger.wandb,
                                  config=config.to_dict(), members=members,
                                  group=run_group(config)))
    lay = devices.layout(tc.shard, len(members), tc.batch_size)
    state, d = devices.place(state, d, lay)
    summary["devices"], summary["mesh"] = lay.devices, lay.shape()
    names = loop.measurement_names(exp)
    every = {"eval": tc.eval_every, **{n: p.every for n, p in config.probes.active.items()}}
    plan = functools.partial(cadence.plan, tc.steps, tc.log_every, every, tc.checkpoint_every,
                             per_call(config), task_length=config.task.length)
    fresh = plan()
    calls = fresh if start is None else plan(start=start)
    # one program for the run, a resumed one the fresh run's: its slots, its plain loops
    k = cadence.program_slots(fresh)
    loops = cadence.loops(s.n_plain for c in fresh for s in c.slots)
    try:
        t_compile = time.perf_counter()
        call = loop.make_program(
            exp, k, lay, loops=loops, plain_interventions=loop.interventions_in_plain(exp, fresh)
        ).lower(state, d, loop.plan_arrays(calls[0], k, names)).compile()
        summary["compile_seconds"] = round(time.perf_counter() - t_compile, 3)
        for tr in trackers:
            tr.compile_seconds = summary["compile_seconds"]
        t_train = time.perf_counter()
        bar = tqdm(total=tc.steps, initial=calls[0].slots[0].step, unit="step",
                   dynamic_ncols=True,
                   disable=not primary or not (config.logger.progress if progress is None
                                               else progress),
                   desc=f"{label}{config.model.name} {config.activation.name} "
                        f"d{config.model.depth}")
        files_of = {n: probes.get(n).array_file for n in config.probes.active}
        arrays = {n: ArrayFile(run_dir / f, start) for n, f in files_of.items() if f}
        record = Recorder(writer, trackers, members, bar, summary, t0,
                          arrays if primary else None)
        pending = None
        for c in calls:
            if c.checkpoint and ckpt is not None:
                # records of every step before this one reach the disk before its checkpoint
                if pending is not None:
                    record(*pending)
                    pending = None
                writer.flush()
                ckpt.save(c.slots[0].step, state)
            state, m = call(state, d, loop.plan_arrays(c, k, names))
            if pending is not None:
                record(*pending)
            pending = (c, m)
        assert pending is not None  # every plan has a call
        last_div = record(*pending, running=False)  # the final summary is written below
        bar.close()
        summary["train_seconds"] = round(time.perf_counter() - t_train, 4)  # after compiling
        if ckpt is not None:
            ckpt.wait()
        summary["status"] = "diverged" if np.all(last_div >= 0) else "completed"
    except BaseException:
        summary["status"] = "failed"
        raise
    finally:
        summary["seeds"] = [tr.summary() for tr in trackers]
        summary["aggregate"] = aggregate(summary["seeds"])
        summary["wall_time"] = round(time.perf_counter() - t0, 3)
        writer.write_summary(summary, final=True)
        writer.close(failed=summary["status"] == "failed")
        if ckpt is not None:
            ckpt.close()
    return summary

