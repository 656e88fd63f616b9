"""The local sink: metrics.jsonl (one JSON object per line, flushed per batch of records, so a
killed run keeps what it had) and summary.json (replaced atomically) in the run directory."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actlab.files import METRICS_FILE, SUMMARY_FILE, clean, write_json_atomic
from actlab.sinks.base import Record, Writer


class LocalWriter(Writer):
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


def make(run_dir: str | os.PathLike, **context: Any) -> Writer:
    """The local sink of a run directory."""
    return LocalWriter(run_dir)
