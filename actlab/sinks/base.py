"""One writer interface, several sinks; asynchronous writing and fan-out are wrappers.

The driver calls `write_records`, `write_summary`, `flush` and `close` on one
Writer and never asks which sinks are on (as in CommonLoopUtils' metric writers).
Writers never interpret a run's status: the driver says whether a summary is
final and whether the run failed.

- `LocalWriter`: metrics.jsonl (one JSON object per line, flushed per batch of
  records, so a killed run keeps what it had) and summary.json (atomic).
- `StdoutWriter`, `NullWriter`, `WandbWriter` (one W&B run per member).
- `TensorBoardWriter` (actlab.sinks.tensorboard): event files in <run dir>/tensorboard/, one
  TensorBoard run per member, with histograms of the pre-activations.
- `MultiWriter(writers)`: fan-out; `AsyncWriter(writer)`: a background thread.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from actlab.files import METRICS_FILE, SUMMARY_FILE, clean, write_json_atomic

Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Histograms:
    """Binned distributions at one log step, one per member (leading axis of each array).

    `edges` [M, B + 1] bound the `counts` [M, B]; `num`, `sum`, `sum_squares` [M] are those
    of every finite value binned (the statistics TensorBoard shows beside the bins).
    """

    edges: Any
    counts: Any
    num: Any
    sum: Any
    sum_squares: Any


class Writer(Protocol):
    def write_records(self, records: list[Record]) -> None:
        """Append records (one per log step and member; key `member` is the member index)."""

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        """Replace the run summary; `final` once, at the end of the run."""

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        """Distributions at a log step: name (`preact/<l>`) -> `Histograms`, or raw values
        with the members on the leading axis."""

    def flush(self) -> None:
        """Block until everything written so far has reached the sink."""

    def close(self, failed: bool = False) -> None:
        """Flush and release the sink; `failed` when the run ended by an error."""


class LocalWriter:
    """metrics.jsonl + summary.json in the run directory."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._f = open(self.dir / METRICS_FILE, "a", encoding="utf-8")

    def write_records(self, records: list[Record]) -> None:
        self._f.write("".join(json.dumps(clean({k: v for k, v in r.items() if k != "member"}))
                              + "\n" for r in records))
        self._f.flush()

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        # fsync only the final summary; the ones written while running are replaced soon
        write_json_atomic(self.dir / SUMMARY_FILE, summary, sync=final)

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        pass  # metrics.jsonl holds scalars only

    def flush(self) -> None:
        self._f.flush()

    def close(self, failed: bool = False) -> None:
        self._f.close()


class NullWriter:
    """Discards everything."""

    def write_records(self, records: list[Record]) -> None:
        pass

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        pass

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


class StdoutWriter(NullWriter):
    """One short line per record of the first member (for logs of batch jobs)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write_records(self, records: list[Record]) -> None:
        for r in records:
            if r.get("member", 0) != 0:
                continue
            parts = [f"step {r['step']}"] + [
                f"{k} {r[k]:.4g}" for k in ("train/loss", "train/acc", "eval/loss", "eval/acc")
                if isinstance(r.get(k), float)
            ]
            print("  ".join(parts), file=self.stream, flush=True)


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


class WandbWriter(NullWriter):
    """One W&B run per member (seed x vmapped grid point), grouped by configuration.

    W&B's grouping then averages a configuration's seeds. Records are logged with
    the same keys as metrics.jsonl at their `step`; the resolved config and the
    member's identity are the run config; the member's convergence summary goes
    to the run summary when final. Runs finish with exit code 1 when the run failed.
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

    def write_records(self, records: list[Record]) -> None:
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

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        if not final:
            return
        if self.agent:
            run = self._run(0)  # the sweep's metric: a mean over members
            run.summary.update({k: v["mean"] for k, v in (summary.get("aggregate") or {}).items()
                                if isinstance(v, dict) and v.get("mean") is not None})
            run.summary["status"] = summary.get("status")
            return
        for i, s in enumerate(summary.get("seeds") or []):
            run = self._run(i)
            run.summary.update({k: v for k, v in s.items() if v is not None})
            run.summary["status"] = summary.get("status")

    def close(self, failed: bool = False) -> None:
        for run in self.runs.values():
            run.finish(exit_code=1 if failed else 0)
        self.runs.clear()



class MultiWriter:
    """Writes to every writer in turn."""

    def __init__(self, writers: Iterable[Writer]):
        self.writers = list(writers)

    def write_records(self, records: list[Record]) -> None:
        for w in self.writers:
            w.write_records(records)

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        for w in self.writers:
            w.write_summary(summary, final)

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        for w in self.writers:
            if hasattr(w, "write_histograms"):  # sinks written before the method existed
                w.write_histograms(step, arrays)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self, failed: bool = False) -> None:
        for w in self.writers:
            w.close(failed)


class AsyncWriter:
    """Runs another writer's writes on a background thread, in order.

    An exception raised by the wrapped writer is raised again on the caller's
    thread at the next call (or at flush/close), so no error is lost.
    """

    def __init__(self, writer: Writer):
        self.writer = writer
        self._q: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="actlab-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            call = self._q.get()
            if call is None:
                return
            try:
                call()
            except BaseException as e:
                self._error = e
            finally:
                self._q.task_done()

    def _check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def write_records(self, records: list[Record]) -> None:
        self._check()
        self._q.put(lambda: self.writer.write_records(records))

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        self._check()
        self._q.put(lambda: self.writer.write_summary(summary, final))

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        self._check()
        self._q.put(lambda: self.writer.write_histograms(step, arrays))

    def flush(self) -> None:
        self._q.join()
        self._check()
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        try:
            self.flush()
        finally:
            self._q.put(None)
            self._thread.join()
            self.writer.close(failed)


def make_writer(names: Iterable[str], run_dir: str | os.PathLike, **context: Any) -> Writer:
    """The writers named (local, stdout, none, wandb, tensorboard) behind one background thread.

    `context` is what the W&B writer needs: options, config, members, group
    (TensorBoard takes the members, to name its runs).
    """
    def one(name: str) -> Writer:
        if name == "wandb":
            return WandbWriter(run_dir, **context)
        if name == "tensorboard":
            from actlab.sinks.tensorboard import TensorBoardWriter

            return TensorBoardWriter(run_dir, members=context.get("members"))
        return {"local": lambda: LocalWriter(run_dir), "stdout": StdoutWriter,
                "none": NullWriter}[name]()

    return AsyncWriter(MultiWriter([one(n) for n in names]))
