"""The stdout sink: one short line per record of the first member (for logs of batch jobs)."""

from __future__ import annotations

import os
import sys
from typing import Any

from actlab.sinks.base import NullWriter, Record, Writer


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


def make(run_dir: str | os.PathLike, **context: Any) -> Writer:
    """The stdout sink (the run directory is not used)."""
    return StdoutWriter()
