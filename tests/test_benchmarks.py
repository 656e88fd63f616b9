"""The benchmark's --quick smoke (every figure still runs and prints its table) and the
PyTorch peers it measures actlab against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # a minute of tiny runs; figure 1's profile included
def test_benchmarks_quick_smoke(tmp_path):
    out = tmp_path / "results.md"
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", "1,2,9",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    table = out.read_text()
    for fig in (1, 2, 9):
        assert f"| {fig} " in table, fig
    assert "Machine:" in table and "python -m benchmarks.run --quick" in table


@pytest.fixture
def peers(monkeypatch):
    """benchmarks.peers, imported from the checkout (benchmarks is not installed)."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import peers

    return peers


def test_peers_skip_without_torch(peers, monkeypatch):
    """Without PyTorch every PyTorch peer says so in one line, and the figures go on."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    for call in (lambda: peers.hooked_steps_per_s(2, 8, 16, 2, 1, 0.01),
                 lambda: peers.compiled_steps_per_s(2, 8, 16, 2, 1, 0.01),
                 lambda: peers.ensemble_member_steps(2, 8, 2, 16, 2, 0.01)):
        with pytest.raises(peers.Skipped, match="torch not installed"):
            call()


def test_torch_func_ensemble_members_train_as_separate_models(peers):
    """One Adam over the stacked parameters trains each member as its own model with its
    own Adam would (float64, so that no reassociation of sums can tell them apart)."""
    torch = pytest.importorskip("torch")
    n, batch, steps = 3, 16, 4
    step, params = peers.ensemble_trainer(n, 8, 2, batch, 0.01, dataset="spiral",
                                          dtype="float64")
    x, y, classes = peers._data(torch, "spiral", "cpu")
    x = x.double()
    k = 1  # the member trained again alone
    alone = peers._mlp(torch, x.shape[1], 8, 2, classes).double()
    with torch.no_grad():
        for name, p in alone.named_parameters():
            p.copy_(params[name][k])
    opt = torch.optim.Adam(alone.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (n, batch), generator=gen)
        losses = step(idx)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(alone(x[idx[k]]), y[idx[k]])
        loss.backward()
        opt.step()
        assert torch.allclose(losses[k], loss.detach(), rtol=1e-10)
    for name, p in alone.named_parameters():
        torch.testing.assert_close(params[name][k].detach(), p.detach(), rtol=1e-10, atol=1e-12)
