"""The one writer interface every sink implements, and the wrappers around sinks.

The driver calls `write_records`, `write_summary`, `write_histograms`, `flush` and
`close` on one Writer and never asks which sinks are on (as in CommonLoopUtils' metric
writers). Writers never interpret a run's status: the driver says whether a summary is
final and whether the run failed. `MultiWriter(writers)` fans out; `AsyncWriter(writer)`
writes on a background thread.
"""

from __future__ import annotations

import abc
import dataclasses
import queue
import threading
from collections.abc import Iterable, Mapping
from typing import Any

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


class Writer(abc.ABC):
    """A sink of records and summaries; histograms, flush and close are optional."""

    @abc.abstractmethod
    def write_records(self, records: list[Record]) -> None:
        """Append records (one per log step and member; key `member` is the member index)."""

    @abc.abstractmethod
    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        """Replace the run summary; `final` once, at the end of the run."""

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        """Distributions at a log step: name (`preact/<l>`) -> `Histograms`, or raw values
        with the members on the leading axis. Sinks that hold scalars only ignore them."""
        return  # optional: a no-op by default

    def flush(self) -> None:
        """Block until everything written so far has reached the sink."""
        return  # optional: a no-op by default

    def close(self, failed: bool = False) -> None:
        """Flush and release the sink; `failed` when the run ended by an error."""
        return  # optional: a no-op by default


class NullWriter(Writer):
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


class MultiWriter(Writer):
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
            w.write_histograms(step, arrays)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self, failed: bool = False) -> None:
        for w in self.writers:
            w.close(failed)


class AsyncWriter(Writer):
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
