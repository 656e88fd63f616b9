"""Dormant units and effective rank against numpy on matrices whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from actlab.measure import representation as rep


def known_spectrum(sv, rows=40, seed=0):
    """A [rows, len(sv)] matrix with exactly these singular values."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, len(sv))))
    v, _ = np.linalg.qr(rng.normal(size=(len(sv), len(sv))))
    return (u * np.asarray(sv, float)) @ v.T


def test_dormant_units_are_those_below_tau_of_the_layer_mean():
    rng = np.random.default_rng(1)
    h = np.abs(rng.normal(size=(64, 10))) + 0.5  # every unit active, scores near 1
    h[:, 2] = 0.0  # exactly inactive
    h[:, 7] *= 1e-3  # dormant: score ~1e-3 < 0.025
    h[:, 5] *= 0.5  # half as active: not dormant
    assert float(rep.dormant_frac(h, 0.025)) == pytest.approx(0.2)
    assert float(rep.dormant_frac(h, 0.0)) == pytest.approx(0.1)  # tau = 0: inactive only
    # the definition holds for signed outputs too (|h|), whatever the activation
    signed = h * np.where(rng.random(h.shape) < 0.5, -1.0, 1.0)
    assert float(rep.dormant_frac(signed, 0.025)) == pytest.approx(0.2)
    assert float(rep.dormant_frac(np.zeros((8, 4)), 0.025)) == 1.0  # a dead layer


@pytest.mark.parametrize("sv", [[4.0, 3.0, 2.0, 1.0, 0.0, 0.0], [1.0] * 6, [5.0, 0, 0, 0],
                                [10.0, 1e-3, 1e-3]])
def test_effective_and_stable_rank_of_a_known_spectrum(sv):
    h = known_spectrum(sv)
    p = np.asarray([s for s in sv if s > 0]) / sum(sv)
    want_erank = np.exp(-np.sum(p * np.log(p)))
    want_srank = int(np.searchsorted(np.cumsum(sorted(sv, reverse=True)), 0.99 * sum(sv)) + 1)
    erank, srank = rep.ranks(h.astype(np.float32))
    # float32 singular values: relative error about 1e-6 times the condition of the sum
    assert float(erank) == pytest.approx(want_erank, rel=1e-4)
    assert int(srank) == want_srank


def test_rank_extremes():
    e, s = rep.ranks(np.ones((20, 5), np.float32))  # rank 1
    assert float(e) == pytest.approx(1.0, abs=1e-4) and int(s) == 1
    e, s = rep.ranks(np.zeros((20, 5), np.float32))
    assert float(e) == 0.0 and int(s) == 0


def test_conv_captures_count_positions_as_examples():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(6, 5, 5, 3)).astype(np.float32)  # [P, H, W, C]
    got = rep.representation_metrics([h], tau=0.025)
    flat = h.reshape(-1, 3)
    np.testing.assert_allclose(got["erank"][0], rep.ranks(flat)[0], rtol=1e-6)
    assert got["dormant_frac"].shape == (1,)
