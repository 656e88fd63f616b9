"""The benchmark's figure 13: actlab's language model in tokens per second against the
nanoGPT-style PyTorch loop, and that loop's model being actlab's gpt."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import pytest

from actlab.engine import experiment

ROOT = Path(__file__).resolve().parent.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture
def lm(monkeypatch):
    """benchmarks.lm, imported from the checkout (benchmarks is not installed)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import lm

    return lm


def tokens_per_s(text: str) -> float:
    """The first number of a row's 'N vs M tokens/s' or a note's 'actlab N tokens/s'."""
    return float(text.removeprefix("actlab ").split()[0].replace(",", ""))


def test_fig13_quick_rows(lm, monkeypatch):
    """--quick measures actlab's tokens/s and PyTorch eager's (or says it skipped), here at
    a smaller size still; the torch.compile row is left to `python -m benchmarks.run` (its
    compile takes a minute)."""
    monkeypatch.setattr(lm, "QUICK", lm.Setup(dim=16, heads=2, context=16, batch=8, steps=10,
                                              warmup=2, probe_size=16, repeats=1))
    eager = lm.torch_tokens_per_s

    def no_compile(s, compiled=False):
        if compiled:
            raise lm.peers.Skipped("not compiled in the test")
        return eager(s, compiled)

    monkeypatch.setattr(lm, "torch_tokens_per_s", no_compile)
    rows = lm.fig13(True)
    assert [r.figure[:3] for r in rows] == ["13 ", "13 "]
    eager_row, compiled_row = rows
    assert compiled_row.measured == "skipped: not compiled in the test"
    assert tokens_per_s(compiled_row.note) > 0  # actlab's tokens/s
    if HAS_TORCH:
        ours, _, theirs = eager_row.measured.partition(" vs ")
        assert tokens_per_s(ours) > 0 and tokens_per_s(theirs) > 0
        assert eager_row.ratio is not None and eager_row.ratio > 0
    else:
        assert eager_row.measured.startswith("skipped: torch not installed")
        assert tokens_per_s(eager_row.note) > 0


def test_fig13_without_torch_says_skipped(lm, monkeypatch):
    """Without PyTorch both of its loops say so in one line."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    for compiled in (False, True):
        with pytest.raises(lm.peers.Skipped, match="torch not installed"):
            lm.torch_tokens_per_s(lm.QUICK, compiled)


@pytest.mark.parametrize("size", ["QUICK", "FULL"])
def test_torch_gpt_is_actlab_gpt_in_parameters(lm, size):
    """The PyTorch decoder has actlab's gpt's parameter count at both sizes of the figure."""
    torch = pytest.importorskip("torch")
    s = getattr(lm, size)
    exp = experiment.build(lm.actlab_config(s))
    ours = sum(x[0].size for x in jax.tree.leaves(experiment.initial_state(exp).params))
    assert lm.param_count(lm.torch_gpt(torch, s)) == ours
