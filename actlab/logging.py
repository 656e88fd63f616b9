"""One writer interface, several sinks; writes happen on a background thread.

The training loop calls `writer.write(records)` and `writer.summary(dict)` and
never asks which sinks are on. `local` writes the run-directory files of the
contract: metrics.jsonl (one JSON object per line, flushed per batch of
records, so a killed run keeps what it had) and summary.json (temp file +
rename, so it is always valid JSON).
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def clean(v: Any) -> Any:
    """JSON-safe value: numpy scalars to Python, non-finite floats to None."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def write_json_atomic(path: Path, obj: Any, sync: bool = True) -> None:
    """Write JSON to a temp file in the same directory, then rename over `path`.

    The rename makes it atomic for readers and against a killed process; `sync`
    also fsyncs first, so it survives a power cut.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(clean(obj), f, indent=2)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_metrics(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The records of a metrics.jsonl and how many lines were unreadable.

    A line cut short by a kill (no trailing newline, or not valid JSON) is
    skipped and counted; everything before it is returned.
    """
    records, bad = [], 0
    path = Path(path)
    if not path.exists():
        return records, bad
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                bad += 1
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return records, bad


def rewrite_metrics(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Replace a metrics.jsonl by `records` (temp file + rename: never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Sink(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None: ...
    def summary(self, summary: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class LocalSink:
    """metrics.jsonl + summary.json in the run directory."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._f = open(self.dir / METRICS_FILE, "a", encoding="utf-8")

    def write(self, records: list[dict[str, Any]]) -> None:
        self._f.write("".join(json.dumps(clean({k: v for k, v in r.items() if k != "member"}))
                              + "\n" for r in records))
        self._f.flush()

    def summary(self, summary: dict[str, Any]) -> None:
        # fsync only the final summary; the ones written while running are replaced soon
        write_json_atomic(self.dir / SUMMARY_FILE, summary,
                          sync=summary.get("status") != "running")

    def close(self) -> None:
        self._f.close()


class StdoutSink:
    """One short line per record of the first member (for logs of batch jobs)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            if r.get("member", 0) != 0:
                continue
            parts = [f"step {r['step']}"] + [
                f"{k} {r[k]:.4g}" for k in ("train/loss", "train/acc", "eval/loss", "eval/acc")
                if isinstance(r.get(k), float)
            ]
            print("  ".join(parts), file=self.stream, flush=True)

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class NullSink:
    """Discards everything."""

    def write(self, records: list[dict[str, Any]]) -> None:
        pass

    def summary(self, summary: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def wandb_mode(requested: str = "auto") -> str:
    """'online' only when asked for or when an API key is configured; never waits on a network.

    auto: WANDB_MODE if set, else online with WANDB_API_KEY or a ~/.netrc entry for
    api.wandb.ai, else offline (sync later with `wandb sync <run dir>/wandb/offline-run-*`).
    """
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbSink:
    """One W&B run per member (seed x vmapped grid point), grouped by configuration.

    W&B's grouping then averages a configuration's seeds. Records are logged with
    the same keys as metrics.jsonl at their `step`; the resolved config and the
    member's identity are the run config; the member's convergence summary goes
    to the run summary. Runs are finished with exit code 1 when training failed.
    """

    def __init__(self, run_dir: str | os.PathLike, options: Mapping[str, Any],
                 config: Mapping[str, Any], members: list[dict[str, Any]], group: str):
        import wandb

        self.wandb = wandb
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.options, self.config, self.group = dict(options), dict(config), group
        self.members = members
        self.runs: dict[int, Any] = {}
        self.mode = wandb_mode(self.options.get("mode", "auto"))

    @property
    def agent(self) -> bool:
        """Started by `wandb agent`: one run (the agent's), members' keys prefixed m<i>/."""
        return bool(os.environ.get("WANDB_SWEEP_ID"))

    def _run(self, i: int):
        if self.agent:
            if 0 not in self.runs:
                self.runs[0] = self.wandb.init(config=self.config, dir=str(self.dir),
                                               group=self.options.get("group") or self.group)
            return self.runs[0]
        if i not in self.runs:
            m = self.members[i]
            name = self.group + "".join(f" {k.split('.')[-1]}={v:g}" for k, v in m.items()
                                        if k != "seed") + f" seed={m['seed']}"
            self.runs[i] = self.wandb.init(
                project=self.options.get("project") or "actlab",
                entity=self.options.get("entity"), group=self.options.get("group") or self.group,
                tags=list(self.options.get("tags") or []), name=name, dir=str(self.dir),
                config={**self.config, "member": m}, mode=self.mode, reinit="create_new",
                settings=self.wandb.Settings(silent=True, console="off", x_disable_stats=True))
        return self.runs[i]

    def write(self, records: list[dict[str, Any]]) -> None:
        by_step: dict[tuple[int, int], dict[str, Any]] = {}
        for r in records:
            i = r["member"]
            logged = {k: v for k, v in r.items() if k not in ("step", "member")
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if self.agent and len(self.members) > 1:
                logged = {f"m{i}/{k}": v for k, v in logged.items()}
            slot = by_step.setdefault((0 if self.agent else i, int(r["step"])), {})
            slot.update(logged)
        for (i, step), logged in by_step.items():
            self._run(i).log(logged, step=step)

    def summary(self, summary: dict[str, Any]) -> None:
        self._status = summary.get("status")
        if summary.get("status") in ("completed", "diverged", "failed") and self.agent:
            run = self._run(0)  # the sweep's metric: a mean over members
            run.summary.update({k: v["mean"] for k, v in (summary.get("aggregate") or {}).items()
                                if isinstance(v, dict) and v.get("mean") is not None})
            run.summary["status"] = summary["status"]
        elif summary.get("status") in ("completed", "diverged", "failed"):
            for i, s in enumerate(summary.get("seeds") or []):
                run = self._run(i)
                run.summary.update({k: v for k, v in s.items() if v is not None})
                run.summary["status"] = summary["status"]

    def close(self) -> None:
        failed = getattr(self, "_status", None) not in ("completed", "diverged")
        for run in self.runs.values():
            run.finish(exit_code=1 if failed else 0)
        self.runs.clear()


def make_sink(name: str, run_dir: str | os.PathLike, **context: Any) -> Sink:
    """A sink by name: local, stdout, none, or wandb (context: options, config, members, group)."""
    if name == "wandb":
        return WandbSink(run_dir, **context)
    return {"local": lambda: LocalSink(run_dir), "stdout": StdoutSink, "none": NullSink}[name]()


class Writer:
    """Fans records and summaries out to sinks from a background thread."""

    def __init__(self, sinks: Iterable[Sink]):
        self.sinks = list(sinks)
        self._q: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="actlab-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            kind, payload = self._q.get()
            if kind == "stop":
                return
            try:
                for s in self.sinks:
                    getattr(s, kind)(payload)
            except BaseException as e:  # surfaced on the training thread at flush/close
                self._error = e
            finally:
                self._q.task_done()

    def _check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def write(self, records: list[dict[str, Any]]) -> None:
        self._check()
        self._q.put(("write", records))

    def summary(self, summary: dict[str, Any]) -> None:
        self._check()
        self._q.put(("summary", summary))

    def flush(self) -> None:
        """Block until everything queued has been written."""
        self._q.join()
        self._check()

    def close(self) -> None:
        self.flush()
        self._q.put(("stop", None))
        self._thread.join()
        for s in self.sinks:
            s.close()
