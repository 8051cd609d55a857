"""Datasets: 2-D toys, scikit-learn's 8x8 digits, and user data from .npy / .csv files.

Every loader returns float32 arrays and checks them before any training starts: NaN/inf,
ragged or non-numeric CSV rows and too few rows raise a ``ValueError`` naming the file, row and
column.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

TOYS = ("moons", "8gaussians", "checkerboard", "pinwheel", "rings", "spirals")
BUILTIN = TOYS + ("digits",)
MIN_ROWS = 10

__all__ = ["BUILTIN", "TOYS", "Dataset", "digits", "load_dataset", "read_table", "toy"]


@dataclass
class Dataset:
    """Train/test split; ``context_*`` are None unless context columns were chosen."""

    name: str
    train: np.ndarray
    test: np.ndarray
    context_train: Optional[np.ndarray] = None
    context_test: Optional[np.ndarray] = None
    image_shape: Optional[tuple[int, int]] = None  # for plotting (digits: 8 x 8)

    @property
    def features(self) -> int:
        return self.train.shape[1]

    @property
    def context_features(self) -> int:
        return 0 if self.context_train is None else self.context_train.shape[1]


def toy(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points of a 2-D toy distribution (the usual flow benchmarks), float32 (n, 2)."""
    if name == "moons":
        t = rng.uniform(0, math.pi, n)
        upper = rng.random(n) < 0.5
        x = np.where(upper, np.cos(t), 1 - np.cos(t))
        y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
        points = np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2))
        points = (points - [0.5, 0.25]) * 2
    elif name == "8gaussians":
        angles = rng.integers(0, 8, n) * (2 * math.pi / 8)
        points = 2 * np.stack([np.cos(angles), np.sin(angles)], 1) + 0.1 * rng.standard_normal(
            (n, 2)
        )
    elif name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
        x2 = x2 + (np.floor(x1) % 2)
        points = np.stack([x1, x2], 1) * 2
    elif name == "pinwheel":
        arms, radial, tangential, rate = 5, 0.3, 0.1, 0.25
        labels = rng.integers(0, arms, n)
        features = rng.standard_normal((n, 2)) * [radial, tangential] + [1.0, 0.0]
        angles = 2 * math.pi * labels / arms + rate * np.exp(features[:, 0])
        rot = np.stack(
            [np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1
        ).reshape(n, 2, 2)
        points = 2 * np.einsum("ti,tij->tj", features, rot)
    elif name == "rings":
        radii = rng.integers(1, 5, n) * 0.75
        t = rng.uniform(0, 2 * math.pi, n)
        points = radii[:, None] * np.stack([np.cos(t), np.sin(t)], 1) + 0.08 * rng.standard_normal(
            (n, 2)
        )
    elif name == "spirals":
        t = np.sqrt(rng.random(n)) * 540 * (2 * math.pi) / 360
        d1 = np.stack([-np.cos(t) * t, np.sin(t) * t], 1)
        sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
        points = sign * d1 / 3 + 0.1 * rng.standard_normal((n, 2))
    else:
        raise ValueError(f"unknown toy {name!r}; choose one of {', '.join(TOYS)}")
    return points.astype(np.float32)


def digits(rng: np.random.Generator) -> np.ndarray:
    """scikit-learn's 1797 8x8 digits (shipped with it), dequantised to [0, 1): (1797, 64)."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(np.float64)
    return ((pixels + rng.random(pixels.shape)) / 17.0).astype(np.float32)


def _read_csv(path: Path) -> tuple[np.ndarray, Optional[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    rows = [r for r in rows if r and any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path}: the file has no rows")
    header = None
    try:
        [float(cell) for cell in rows[0]]
    except ValueError:
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    width = len(header) if header else len(rows[0]) if rows else 0
    values = np.empty((len(rows), width), dtype=np.float64)
    first_row = 2 if header else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(
                f"{path}: row {i + first_row} has {len(row)} columns, expected {width}"
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}: row {i + first_row}, column {j + 1} is not a number: {cell!r}"
                ) from None
    return values, header


def read_table(path: Path) -> tuple[np.ndarray, Optional[list[str]]]:
    """A 2-D float array (rows, columns) from .npy or .csv, checked for NaN/inf and size."""
    if not path.exists():
        raise ValueError(f"--data {path}: no such file (or use a built-in: {', '.join(BUILTIN)})")
    if path.suffix == ".npy":
        values, header = np.load(path, allow_pickle=False), None
        if values.ndim != 2:
            raise ValueError(
                f"{path}: expected a 2-D array (rows, features), got shape {values.shape}"
            )
        if not np.issubdtype(values.dtype, np.number):
            raise ValueError(f"{path}: expected a numeric array, got dtype {values.dtype}")
        values = values.astype(np.float64)
        first_row = 0
    elif path.suffix == ".csv":
        values, header = _read_csv(path)
        first_row = 2 if header else 1
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .npy or .csv")
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: row {i + first_row}, column {j + 1} is {values[i, j]} (NaN/inf); clean "
            "the data first"
        )
    if len(values) < MIN_ROWS:
        raise ValueError(
            f"{path}: {len(values)} rows is too few; at least {MIN_ROWS} are needed for a "
            "train/test split"
        )
    return values.astype(np.float32), header


def _column_indices(
    spec: Sequence[str], header: Optional[list[str]], width: int, path: str
) -> list[int]:
    indices = []
    for item in spec:
        if header and item in header:
            indices.append(header.index(item))
            continue
        try:
            index = int(item)
        except ValueError:
            raise ValueError(
                f"--context-cols: {item!r} is neither a column index nor a column name of {path}"
            ) from None
        if not 0 <= index < width:
            raise ValueError(
                f"--context-cols: column {index} is out of range for {path} ({width} columns)"
            )
        indices.append(index)
    return indices


def load_dataset(
    name_or_path: str,
    *,
    n_train: int = 20000,
    n_test: int = 5000,
    test_fraction: float = 0.2,
    seed: int = 0,
    context_cols: Sequence[str] = (),
) -> Dataset:
    """A built-in dataset by name, or a .npy / .csv file split into train and test.

    Example:
        >>> moons = load_dataset("moons", n_train=1000, n_test=200)
        >>> moons.train.shape, moons.test.shape, moons.features
        ((1000, 2), (200, 2), 2)
    """
    rng = np.random.default_rng(seed)
    if name_or_path in TOYS:
        if context_cols:
            raise ValueError("--context-cols needs a data file; the built-in toys have no context")
        return Dataset(
            name_or_path, toy(name_or_path, n_train, rng), toy(name_or_path, n_test, rng)
        )
    if name_or_path == "digits":
        if context_cols:
            raise ValueError("--context-cols needs a data file; digits has no context columns")
        values = digits(rng)
        image_shape: Optional[tuple[int, int]] = (8, 8)
        header = None
    else:
        values, header = read_table(Path(name_or_path))
        image_shape = None
    order = rng.permutation(len(values))
    n_test_rows = max(1, int(round(test_fraction * len(values))))
    test_rows, train_rows = order[:n_test_rows], order[n_test_rows:]
    context_idx = (
        _column_indices(context_cols, header, values.shape[1], name_or_path) if context_cols else []
    )
    data_idx = [j for j in range(values.shape[1]) if j not in context_idx]
    if not data_idx:
        raise ValueError(f"--context-cols leaves no data columns in {name_or_path}")
    name = Path(name_or_path).stem if name_or_path not in BUILTIN else name_or_path
    dataset = Dataset(
        name,
        values[train_rows][:, data_idx],
        values[test_rows][:, data_idx],
        image_shape=image_shape,
    )
    if context_idx:
        dataset.context_train = values[train_rows][:, context_idx]
        dataset.context_test = values[test_rows][:, context_idx]
    return dataset
