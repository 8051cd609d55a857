"""Data sets: built-in loaders and file errors."""

from __future__ import annotations

import numpy as np
import pytest

from energyflow.training.data import load_dataset


def test_dataset_loaders():
    for name in ("moons", "8gaussians", "checkerboard", "pinwheel", "rings", "spirals"):
        ds = load_dataset(name, n_train=100, n_test=50)
        assert (
            ds.train.shape == (100, 2) and ds.test.shape == (50, 2) and np.isfinite(ds.train).all()
        )
    digits = load_dataset("digits")
    assert (
        digits.features == 64
        and digits.image_shape == (1, 8, 8)
        and 0 <= digits.train.min()
        and digits.train.max() < 1
    )
    cancer = load_dataset("breast_cancer")
    rows = np.concatenate([cancer.train, cancer.test])
    assert cancer.features == 30 and len(rows) == 569 and len(cancer.test) == 114
    assert np.allclose(rows.mean(0), 0, atol=1e-5) and np.allclose(rows.std(0), 1, atol=1e-4)
    with pytest.raises(ValueError, match="no such file"):
        load_dataset("nope.csv")
