"""What both sweepers share: the recorded sweep definition and the sweep summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def value_text(override: Any) -> str:
    """The value of an override as written on the command line (`2,4`, `choice(2, 4)`)."""
    return override.input_line.partition("=")[2]


def check_definition(sweep_dir: Path, definition: dict[str, Any]) -> dict[str, Any]:
    """actlab.runs.sweeps.check_definition; a mismatch ends the command in one line, exit code 2."""
    from actlab.runs.sweeps import SweepMismatch, check_definition

    try:
        return check_definition(sweep_dir, definition)
    except SweepMismatch as e:
        print(f"actlab-train: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def write_summary(sweep_dir: Path) -> None:
    """sweep_summary.csv, also for jobs that never ran (the jobs write it as they end)."""
    from actlab.analysis import write_sweep_summary

    write_sweep_summary(sweep_dir)
