"""The benchmark's --quick smoke: every figure still runs and prints its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_quick_smoke(tmp_path):
    out = tmp_path / "results.md"
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "2,9",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    table = out.read_text()
    for fig in (2, 9):
        assert f"| {fig} " in table, fig
    assert "Machine:" in table and "python -m benchmarks.run --quick" in table
