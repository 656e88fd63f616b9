"""The run directory's files: names of the contract, atomic writes, reading records back.

Every file actlab replaces (summary.json, a rewritten metrics.jsonl,
sweep_summary.csv) goes through `atomic_write`: a temp file in the same
directory, then a rename, so a reader or a killed process never sees half of it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

METRICS_FILE = "metrics.jsonl"
DENSITY_FILE = "hessian_density.jsonl"  # the Hessian probe's SLQ nodes and weights
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


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], object],
                 sync: bool = True) -> None:
    """Call `write(f)` on a temp file beside `path`, then rename it over `path`.

    The rename makes the write atomic for readers and against a killed process;
    `sync` also fsyncs first, so the file survives a power cut.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any, sync: bool = True) -> None:
    """`obj` as indented JSON (non-finite numbers as null), written atomically."""
    atomic_write(path, lambda f: json.dump(clean(obj), f, indent=2), sync)


def read_metrics(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The records of a metrics.jsonl and how many lines were unreadable.

    A line cut short by a kill (no trailing newline, or not valid JSON) is
    skipped and counted; everything before it is returned.
    """
    records: list[dict[str, Any]] = []
    bad = 0
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
    """Replace a metrics.jsonl by `records`, atomically."""
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records)))
