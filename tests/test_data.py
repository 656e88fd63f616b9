"""The Playground generators against FACTS.md: geometry, balance, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actlab import data


def raw(ds, split="train"):
    """Undo the standardisation: the generator's own coordinates."""
    x = ds.x_train if split == "train" else ds.x_test
    return x * ds.std + ds.mean


def both(ds):
    return np.concatenate([raw(ds), raw(ds, "test")]), np.concatenate([ds.y_train, ds.y_test])


def test_spiral_geometry_without_noise():
    ds = data.load("spiral", num_points=400, noise=0.0)
    x, y = both(ds)
    n = 200
    r = np.hypot(x[:, 0], x[:, 1])
    # radii are exactly 5 i / n, i = 0..n-1, once per class
    for c in (0, 1):
        np.testing.assert_allclose(np.sort(r[y == c]), 5.0 * np.arange(n) / n, atol=1e-5)
    # the angle follows t = 1.75 * 2 pi * r / 5 (+ pi for class 0): x = r sin t, y = r cos t
    t = 1.75 * 2 * math.pi * r / 5 + np.where(y == 1, 0.0, math.pi)
    keep = r > 0.05
    np.testing.assert_allclose(x[keep, 0], (r * np.sin(t))[keep], atol=1e-4)
    np.testing.assert_allclose(x[keep, 1], (r * np.cos(t))[keep], atol=1e-4)


def test_spiral_noise_is_uniform_and_bounded():
    clean_x, _ = both(data.load("spiral", num_points=400, noise=0.0, seed=3))
    noisy_x, _ = both(data.load("spiral", num_points=400, noise=0.5, seed=3))
    d = np.abs(np.sort(noisy_x, 0) - np.sort(clean_x, 0))
    assert d.max() < 5  # crude: noise moves points by at most 0.5 per coordinate
    r_clean = np.sort(np.hypot(*clean_x.T))
    r_noisy = np.sort(np.hypot(*noisy_x.T))
    assert np.max(np.abs(r_clean - r_noisy)) <= 0.5 * math.sqrt(2) + 1e-5


PLAYGROUND = ("circle", "gauss", "spiral", "xor")


@pytest.mark.parametrize("name", PLAYGROUND)
def test_balance_split_and_determinism(name):
    a = data.load(name, num_points=500, train_fraction=0.6, seed=1)
    b = data.load(name, num_points=500, train_fraction=0.6, seed=1)
    c = data.load(name, num_points=500, train_fraction=0.6, seed=2)
    assert len(a.x_train) == 300 and len(a.x_test) == 200
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int32
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    _, y = both(a)
    assert set(np.unique(y)) == {0, 1} and a.num_classes == 2
    assert abs(np.mean(y) - 0.5) < 0.1
    # standardised with train statistics
    np.testing.assert_allclose(a.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a.x_train.std(0), 1, atol=1e-4)


def test_circle_radii():
    x, y = both(data.load("circle", num_points=1000, noise=0.0))
    r = np.hypot(*x.T)
    assert np.all(r[y == 1] <= 2.5 + 1e-5)
    assert np.all((r[y == 0] >= 3.5 - 1e-5) & (r[y == 0] <= 5 + 1e-5))
    assert np.sum(y == 1) == 500


def test_xor_is_pushed_off_the_axes_and_labelled_by_sign():
    x, y = both(data.load("xor", num_points=1000, noise=0.0))
    assert np.all(np.abs(x) >= 0.3 - 1e-5) and np.all(np.abs(x) <= 5.3 + 1e-5)
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] >= 0).astype(int))


def test_gauss_centres():
    x, y = both(data.load("gauss", num_points=4000, noise=0.0))
    np.testing.assert_allclose(x[y == 1].mean(0), [2, 2], atol=0.1)
    np.testing.assert_allclose(x[y == 0].mean(0), [-2, -2], atol=0.1)
    np.testing.assert_allclose(x[y == 1].var(0), [0.5, 0.5], rtol=0.1)


def test_bad_names_and_params():
    with pytest.raises(data.DataError, match="choose from: cifar10, cifar100, circle"):
        data.load("spiralz")
    with pytest.raises(data.DataError, match="no parameter radius"):
        data.load("spiral", radius=3)
    with pytest.raises(data.DataError, match="train_fraction"):
        data.load("spiral", train_fraction=1.0)
