"""A reduced version of the modern_ffn_lm study in experiments/: the causal model on the
embedded text, one elementwise and one gated FFN at matched size, and its summary."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_studies_modern import run

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_modern_ffn_lm_matched_sizes_relu_sparse_and_summary(tmp_path, monkeypatch):
    out = {}
    for act in ("relu", "swiglu"):  # the study's model (dim 64, 2 blocks) for a few steps
        out[act] = run(tmp_path / "sweep", "modern_ffn_lm", act, f"activation={act}",
                       "train.steps=40", "train.seeds=2", "train.log_every=20",
                       "train.eval_every=20", "train.batch_size=8",
                       "train.metrics=[ffn_sparsity,outlier_kurtosis]")
    params = {act: s["num_params"] for act, (s, _) in out.items()}
    assert abs(params["relu"] - params["swiglu"]) <= 0.02 * params["relu"]  # matched FFNs
    for act, (s, recs) in out.items():
        assert s["status"] == "completed" and len(recs) == 2
        for r in recs:  # ln 256 nats per byte at initialisation is 8 bits; it learns
            assert r["eval/bpb"] < 8.0 - 1.0 and r["eval/bpb"] == pytest.approx(
                r["eval/loss"] / math.log(2), rel=1e-5)
            assert r["outlier_kurtosis/0"] >= 1.0 - 1e-5  # mean(s^4) >= mean(s^2)^2
            if act == "relu":  # a relu zeroes about half of its inputs exactly
                assert 0.2 < r["ffn_sparsity/0"] < 0.9
            else:  # silu(a) * b is zero only where a or b is
                assert r["ffn_sparsity/0"] < 0.01
    monkeypatch.syspath_prepend(str(ROOT))
    from experiments.modern_ffn_lm import summarise

    md = summarise.summarise(tmp_path / "sweep", tmp_path)
    assert "| relu |" in md and "| swiglu |" in md
    for fig in ("final_ci.png", "val_curves.png", "sparsity_kurtosis.png"):
        assert (tmp_path / fig).stat().st_size > 0
