"""The run directory's lifecycle: prepare it, compare configurations, re-feed kept records.

A directory holding a completed run is never retrained; one holding a run of
another configuration is never touched; a killed run resumes from its newest
checkpoint, and the records it wrote after that checkpoint are dropped so that
metrics.jsonl ends with exactly one record per (step, member).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from actlab import files
from actlab.config import Config
from actlab.engine.resolve import resolve
from actlab.errors import UserError
from actlab.measure import probes
from actlab.runs import checkpoint
from actlab.runs.records import Tracker

# keys that may change between a run and its resumption
RESUMABLE_KEYS = {"train": ("resume", "checkpoint_every", "checkpoint_keep", "log_steps_per_call"),
                  "logger": None}


class RunDirError(UserError):
    """The run directory cannot be used (one line, with what to do)."""


def _current(cfg: dict[str, Any]) -> dict[str, Any]:
    """A stored resolved config as this version resolves it: settings added since it was
    written take their defaults (so they do not count as a change); unreadable: as stored."""
    known = {name: set(probes.fields(name)) for name in probes.names()}
    kept = {name: {k: v for k, v in (p or {}).items() if k in known.get(name, ())}
            for name, p in (cfg.get("probes") or {}).items() if name in known}
    try:  # (probe settings that no longer exist, e.g. an unused iters, are dropped)
        return resolve(Config.from_dict({**cfg, "probes": kept})).to_dict()
    except Exception:  # noqa: BLE001 - a config this version cannot read compares as stored
        return cfg


def comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that may change between a run and its resumption."""
    out = json.loads(json.dumps(files.clean(cfg)))
    for section, keys in RESUMABLE_KEYS.items():
        if keys is None:
            out.pop(section, None)
        for key in keys or ():
            out.get(section, {}).pop(key, None)
    return out


def prepare(config: Config, run_dir: Path) -> tuple[str, int | None]:
    """Decide how to start in `run_dir`: ("done", None), ("resume", step) or ("fresh", None).

    Fresh starts remove an earlier attempt's metrics and checkpoints; a resume keeps them.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".actlab-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to run directory {run_dir}: {e.strerror}; choose "
                          f"another with hydra.run.dir=... (or hydra.sweep.dir=...)") from None
    resume = config.train.resume
    summary_path = run_dir / files.SUMMARY_FILE
    old = None
    if summary_path.exists():
        try:
            old = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
    if resume is not False and old is not None:
        if comparable(_current(old.get("config") or {})) != comparable(config.to_dict()):
            raise RunDirError(f"{run_dir} holds a run of a different configuration; use "
                              f"another directory, or train.resume=false to overwrite it")
        if old.get("status") in ("completed", "diverged"):
            return "done", None
    step = checkpoint.latest_step(run_dir) if resume is not False else None
    if step is not None:
        return "resume", step
    if resume is True:
        print(f"train.resume=true but {run_dir} has no checkpoint: starting fresh", flush=True)
    (run_dir / files.METRICS_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / checkpoint.CHECKPOINT_DIR, ignore_errors=True)
    return "fresh", None


def refeed_records(run_dir: Path, start: int, members: list[dict[str, Any]],
                   trackers: list[Tracker], rewrite: bool = True) -> list[dict[str, Any]]:
    """Keep the records before `start`, feed them to the trackers, and (`rewrite`: the
    process that writes the run directory) rewrite metrics.jsonl with them."""
    path = run_dir / files.METRICS_FILE
    records, _ = files.read_metrics(path)
    kept = [r for r in records if r["step"] < start]
    index = {tuple(m.items()): i for i, m in enumerate(members)}
    for r in kept:
        i = index.get(tuple((k, r.get(k)) for k in members[0]))
        if i is not None:
            trackers[i].update(dict(r))
    if rewrite:
        files.rewrite_metrics(path, kept)
    return kept
