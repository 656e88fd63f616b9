"""One writer interface, several sinks; asynchronous writing and fan-out are wrappers.

The driver calls `write_records`, `write_summary`, `flush` and `close` on one
Writer and never asks which sinks are on (as in CommonLoopUtils' metric writers).
Writers never interpret a run's status: the driver says whether a summary is
final and whether the run failed.

- `LocalWriter`: metrics.jsonl (one JSON object per line, flushed per batch of
  records, so a killed run keeps what it had) and summary.json (atomic).
- `StdoutWriter`, `NullWriter`, `WandbWriter` (one W&B run per member).
- `TensorBoardWriter`: event files in <run dir>/tensorboard/, one TensorBoard run per member.
- `MultiWriter(writers)`: fan-out; `AsyncWriter(writer)`: a background thread.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from actlab.files import METRICS_FILE, SUMMARY_FILE, clean, write_json_atomic

Record = dict[str, Any]


class Writer(Protocol):
    def write_records(self, records: list[Record]) -> None:
        """Append records (one per log step and member; key `member` is the member index)."""

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        """Replace the run summary; `final` once, at the end of the run."""

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        """Distributions at a log step: name (`preact/<l>`) -> array, leading axis the members."""

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


_LAYER = re.compile(r"^(.+)/(\d+)$")


def tensorboard_tag(key: str, width: int = 1) -> str:
    """The TensorBoard tag of a metrics.jsonl key: `grad_norm/3` -> `grad_norm/layer_3`.

    TensorBoard puts tags with the same prefix (before the first '/') in one panel
    group, so every layer of a metric family shares a group; layer numbers are
    zero-padded to `width` digits so they sort in order. Other keys (`train/loss`,
    `eval/acc`, `grad_norm/out`, `hessian/top_eig`, `wall_time`) are kept as they are.
    """
    m = _LAYER.match(key)
    return f"{m.group(1)}/layer_{int(m.group(2)):0{width}d}" if m else key


def _member_names(members: list[dict[str, Any]]) -> list[str]:
    """TensorBoard run names: `seed=0`, or with vmapped values `lr=0.003,seed=1`."""
    def name(m: dict[str, Any], short: bool) -> str:
        parts = [f"{k.rsplit('.', 1)[-1] if short else k}={v:g}" for k, v in m.items()
                 if k != "seed" and isinstance(v, (int, float))]
        return ",".join(parts + [f"seed={m.get('seed')}"])

    names = [name(m, True) for m in members]
    return names if len(set(names)) == len(names) else [name(m, False) for m in members]


class TensorBoardWriter(NullWriter):
    """TensorBoard event files in <run dir>/tensorboard/<member>/, one TensorBoard run per member.

    Written with tensorboardX (no TensorFlow). Every numeric key of a record goes in
    as a scalar at its `step` (tags from `tensorboard_tag`), except the member's
    identity (seed and vmapped values, which name its run); non-finite values are
    left out, as metrics.jsonl holds them as null. A member's event file starts with
    a purge at its first step, so a resumed run replaces what the killed one wrote
    after the checkpoint and a fresh start replaces an earlier attempt.
    `write_histograms` adds distributions (e.g. pre-activations) per member.
    """

    DIR = "tensorboard"

    def __init__(self, run_dir: str | os.PathLike, members: list[dict[str, Any]] | None = None,
                 flush_secs: int = 30):
        import tensorboardX

        self._SummaryWriter = tensorboardX.SummaryWriter
        self.dir = Path(run_dir) / self.DIR
        self.members = list(members) if members else None
        self.names = _member_names(self.members) if self.members else None
        self.flush_secs = flush_secs
        self.width: int | None = None
        self.runs: dict[int, Any] = {}

    def _identity(self, i: int, record: Record | None) -> tuple[str, set[str]]:
        if self.names is not None and i < len(self.names):
            return self.names[i], set(self.members[i])
        ids = {k: v for k, v in (record or {}).items()
               if k == "seed" or ("." in k and "/" not in k)}
        return (_member_names([ids])[0] if ids else f"member_{i}"), set(ids)

    def _run(self, i: int, step: int, record: Record | None = None):
        if i not in self.runs:
            name, _ = self._identity(i, record)
            # event files of one run are read in name order: the suffix orders two in a second
            self.runs[i] = self._SummaryWriter(logdir=str(self.dir / name), purge_step=int(step),
                                               flush_secs=self.flush_secs,
                                               filename_suffix=f".{time.time_ns()}")
        return self.runs[i]

    def _width(self, keys: Iterable[str]) -> int:
        """Digits of the largest layer number, fixed by the first keys with layers in them."""
        if self.width is None:
            layers = [int(m.group(2)) for k in keys if (m := _LAYER.match(k))]
            if not layers:
                return 1
            self.width = len(str(max(layers)))
        return self.width

    def write_records(self, records: list[Record]) -> None:
        for r in records:
            i, step = int(r.get("member", 0)), int(r["step"])
            _, identity = self._identity(i, r)
            run = self._run(i, step, r)
            width = self._width(r)
            for k, v in r.items():
                if k in ("step", "member") or k in identity:
                    continue
                v = clean(v)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                run.add_scalar(tensorboard_tag(k, width), v, step)

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        import numpy as np

        width = self._width(arrays)
        for name, a in arrays.items():
            a = np.asarray(a)
            for i in range(a.shape[0]):
                values = a[i].astype(np.float64).ravel()
                values = values[np.isfinite(values)]
                if values.size:
                    self._run(i, step).add_histogram(tensorboard_tag(name, width), values, step)

    def flush(self) -> None:
        for run in self.runs.values():
            run.flush()

    def close(self, failed: bool = False) -> None:
        for run in self.runs.values():
            run.close()
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
            return TensorBoardWriter(run_dir, members=context.get("members"))
        return {"local": lambda: LocalWriter(run_dir), "stdout": StdoutWriter,
                "none": NullWriter}[name]()

    return AsyncWriter(MultiWriter([one(n) for n in names]))
