"""Datasets: 2-D toys, scikit-learn's digits and breast-cancer tables, user .npy / .csv files,
and images (``energyflow.training.images``: digits-images, image folders, 4-D .npy, MNIST IDX).

Every loader returns float32 arrays and checks them before any training starts: NaN/inf,
ragged or non-numeric CSV rows and too few rows raise a ``ValueError`` naming the file, row and
column.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from energyflow.training.images import DIGITS_IMAGES, is_image_source, read_images, read_labels

TOYS = ("moons", "8gaussians", "checkerboard", "pinwheel", "rings", "spirals")
TABULAR = ("digits", "breast_cancer")
BUILTIN = TOYS + TABULAR + (DIGITS_IMAGES,)
MIN_ROWS = 10

__all__ = [
    "BUILTIN",
    "TABULAR",
    "TOYS",
    "Dataset",
    "breast_cancer",
    "digits",
    "load_dataset",
    "read_table",
    "toy",
]


@dataclass
class Dataset:
    """Train/test split; ``context_*`` are None unless context columns were chosen (or, for
    a class-conditional image run, the one-hot classes). Image data (``images``) hold flattened
    images of ``image_shape`` (C, H, W) as rows, and their integer ``labels_*`` where known;
    ``image_shape`` alone (the flat digits table) is for pictures only."""

    name: str
    train: np.ndarray
    test: np.ndarray
    context_train: Optional[np.ndarray] = None
    context_test: Optional[np.ndarray] = None
    image_shape: Optional[tuple[int, int, int]] = None
    images: bool = False
    labels_train: Optional[np.ndarray] = None
    labels_test: Optional[np.ndarray] = None

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


def breast_cancer() -> np.ndarray:
    """scikit-learn's Wisconsin breast-cancer measurements (shipped with it): 569 rows of 30
    positive, right-skewed features, log1p-transformed and standardised: (569, 30)."""
    from sklearn.datasets import load_breast_cancer

    values = np.log1p(load_breast_cancer().data.astype(np.float64))
    return ((values - values.mean(0)) / values.std(0)).astype(np.float32)


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


def _parse_number(cell: str, comma_decimal: bool) -> float:
    cell = cell.strip()
    return float(cell.replace(",", ".") if comma_decimal else cell)


def _is_number(cell: str, comma_decimal: bool) -> bool:
    try:
        _parse_number(cell, comma_decimal)
    except ValueError:
        return False
    return True


def _delimiter(path: Path, text: str) -> str:
    """The delimiter of a CSV: comma, semicolon or tab, whichever splits the first lines into
    the same number (> 1) of cells; a comma when every line is a single column."""
    lines = [line for line in text.splitlines() if line.strip()][:20]
    for delimiter in (";", "\t", ","):
        counts = {len(next(csv.reader([line], delimiter=delimiter))) for line in lines}
        if len(counts) == 1 and counts.pop() > 1:
            return delimiter
    if any(";" in line or "\t" in line for line in lines):
        raise ValueError(
            f"{path}: could not tell the delimiter (the lines split into different numbers of "
            "cells); use one of comma, semicolon or tab throughout"
        )
    return ","


def _read_csv(path: Path, header: Optional[bool]) -> tuple[np.ndarray, Optional[list[str]], int]:
    """Values, column names (or None) and the line number of the first data row.

    Rule: the first row is a header unless ``header`` says otherwise or one of its cells parses
    as a number (``1,2,3`` is data; ``a,b,3`` is taken for a header only if forced). A byte-order
    mark is stripped. With a semicolon or tab delimiter, decimal commas (``1,5``) are read.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text CSV file (is it a .npy renamed .csv?)") from None
    delimiter = _delimiter(path, text)
    comma_decimal = delimiter != ","
    numbered = [
        (number, row)
        for number, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), start=1)
        if row and any(cell.strip() for cell in row)
    ]
    if not numbered:
        raise ValueError(f"{path}: the file has no rows")
    first = numbered[0][1]
    if header is None:
        header = not any(_is_number(cell, comma_decimal) for cell in first)
    names = None
    if header:
        names, numbered = [cell.strip() for cell in first], numbered[1:]
    if not numbered:
        raise ValueError(f"{path}: the file has a header but no data rows")
    width = len(names) if names else len(numbered[0][1])
    values = np.empty((len(numbered), width), dtype=np.float64)
    for i, (number, row) in enumerate(numbered):
        if len(row) != width:
            raise ValueError(
                f"{path}: row {number} has {len(row)} columns, expected {width} "
                f"({DELIMITERS[delimiter]}-separated)"
            )
        for j, cell in enumerate(row):
            try:
                values[i, j] = _parse_number(cell, comma_decimal)
            except ValueError:
                raise ValueError(
                    f"{path}: row {number}, column {j + 1} is not a number: {cell!r} "
                    f"({DELIMITERS[delimiter]}-separated)"
                ) from None
    kind = f"a header ({', '.join(names)})" if names else "no header"
    print(f"reading {path}: {DELIMITERS[delimiter]}-separated, {kind}", file=sys.stderr)
    return values, names, numbered[0][0]


def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a readable .npy file (is it a CSV renamed .npy?)")
    try:
        values = np.load(path, allow_pickle=False)
    except ValueError as err:  # object arrays need pickle
        raise ValueError(f"{path}: not a numeric array ({err}); save a float array") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from None
    if not isinstance(values, np.ndarray):
        raise ValueError(f"{path}: expected one array, got a {type(values).__name__}")
    if values.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D array (rows, features), got shape {values.shape}")
    if np.iscomplexobj(values):
        raise ValueError(f"{path}: complex values are not supported; pass real features")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{path}: expected a numeric array, got dtype {values.dtype}")
    if values.size == 0:
        raise ValueError(f"{path}: the array is empty (shape {values.shape})")
    return values


def read_table(path: Path, header: Optional[bool] = None) -> tuple[np.ndarray, Optional[list[str]]]:
    """A 2-D float32 array (rows, columns) from .npy or .csv (any case), checked for NaN/inf
    after the cast to float32 (so 1e39 is caught) and for size; the errors name file, row and
    column. ``header`` forces the CSV header rule (see ``_read_csv``)."""
    if not path.exists():
        raise ValueError(f"--data {path}: no such file (or use a built-in: {', '.join(BUILTIN)})")
    if path.is_dir():
        raise ValueError(f"--data {path}: is a folder, not a data file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        values, names, first_row = _read_npy(path), None, 1
    elif suffix == ".csv":
        values, names, first_row = _read_csv(path, header)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .npy or .csv")
    with np.errstate(over="ignore"):
        cast = values.astype(np.float32)
    bad = ~np.isfinite(cast)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        where = f"row {i + first_row}" if suffix == ".csv" else f"row {i} (0-based)"
        what = values[i, j]
        reason = "NaN/inf" if not np.isfinite(what) else "beyond the float32 range (3.4e38)"
        raise ValueError(
            f"{path}: {where}, column {j + 1} is {what} ({reason}); clean the data first"
        )
    if len(cast) < MIN_ROWS:
        raise ValueError(
            f"{path}: {len(cast)} rows is too few; at least {MIN_ROWS} are needed for a "
            "train/test split"
        )
    return cast, names


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
    if len(set(indices)) != len(indices):
        raise ValueError(f"--context-cols: {list(spec)} names a column twice")
    return indices


def _split(rows: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Test and train row indices: a random ``test_fraction`` (at least one row) is test."""
    order = rng.permutation(rows)
    n_test_rows = max(1, int(round(test_fraction * rows)))
    return order[:n_test_rows], order[n_test_rows:]


def _image_dataset(
    name_or_path: str,
    rng: np.random.Generator,
    test_fraction: float,
    image_size: Optional[int],
    labels: Optional[str],
    class_conditional: Optional[bool],
) -> Dataset:
    images, own_labels = read_images(name_or_path, image_size, rng)
    if len(images) < MIN_ROWS:
        raise ValueError(
            f"--data {name_or_path}: {len(images)} images is too few (at least {MIN_ROWS})"
        )
    classes = read_labels(labels, rows=len(images)) if labels is not None else own_labels
    conditional = labels is not None if class_conditional is None else class_conditional
    if conditional and classes is None:
        raise ValueError(
            f"--class-conditional needs labels: {name_or_path} has none of its own; pass "
            "--labels y.npy (one integer class per image) or put the images in class subfolders"
        )
    test_rows, train_rows = _split(len(images), test_fraction, rng)
    flat = images.reshape(len(images), -1)
    name = name_or_path if name_or_path == DIGITS_IMAGES else Path(name_or_path).stem
    dataset = Dataset(
        name,
        flat[train_rows],
        flat[test_rows],
        image_shape=tuple(images.shape[1:]),
        images=True,
        labels_train=None if classes is None else classes[train_rows],
        labels_test=None if classes is None else classes[test_rows],
    )
    if conditional:
        one_hot = np.eye(int(classes.max()) + 1, dtype=np.float32)[classes]
        dataset.context_train, dataset.context_test = one_hot[train_rows], one_hot[test_rows]
    return dataset


def load_dataset(
    name_or_path: str,
    *,
    n_train: int = 20000,
    n_test: int = 5000,
    test_fraction: float = 0.2,
    seed: int = 0,
    context_cols: Sequence[str] = (),
    header: Optional[bool] = None,
    image_size: Optional[int] = None,
    labels: Optional[str] = None,
    class_conditional: Optional[bool] = None,
) -> Dataset:
    """A built-in dataset by name, or a .npy / .csv file split into train and test, or images.

    ``header`` forces whether a CSV's first row is a header (default: decided by ``_read_csv``'s
    rule). Duplicate ``context_cols`` are refused. Images (``digits-images``, a folder, a 4-D
    .npy, an MNIST IDX file): ``image_size`` resizes a folder's images to S x S, ``labels`` (an
    .npy or IDX file, one integer class per image) gives their classes, and
    ``class_conditional`` (default: whether ``labels`` is given) makes the one-hot class the
    context.

    Example:
        >>> moons = load_dataset("moons", n_train=1000, n_test=200)
        >>> moons.train.shape, moons.test.shape, moons.features
        ((1000, 2), (200, 2), 2)
    """
    rng = np.random.default_rng(seed)
    if is_image_source(name_or_path):
        if context_cols:
            raise ValueError("--context-cols selects table columns; images take --labels")
        return _image_dataset(
            name_or_path, rng, test_fraction, image_size, labels, class_conditional
        )
    for flag, value in (
        ("--image-size", image_size),
        ("--labels", labels),
        ("--class-conditional", class_conditional),
    ):
        if value is not None:
            raise ValueError(
                f"{flag} applies to image data (digits-images, an image folder, an (N, C, H, W) "
                f".npy or MNIST IDX files); {name_or_path} is a table"
            )
    if name_or_path in TOYS:
        if context_cols:
            raise ValueError("--context-cols needs a data file; the built-in toys have no context")
        return Dataset(
            name_or_path, toy(name_or_path, n_train, rng), toy(name_or_path, n_test, rng)
        )
    if name_or_path in TABULAR:
        if context_cols:
            raise ValueError(
                f"--context-cols needs a data file; {name_or_path} has no context columns"
            )
        values = digits(rng) if name_or_path == "digits" else breast_cancer()
        image_shape: Optional[tuple[int, int, int]] = (
            (1, 8, 8) if name_or_path == "digits" else None
        )
    else:
        values, header = read_table(Path(name_or_path), header)
        image_shape = None
    test_rows, train_rows = _split(len(values), test_fraction, rng)
    names = None if name_or_path in TABULAR else header
    context_idx = (
        _column_indices(context_cols, names, values.shape[1], name_or_path) if context_cols else []
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
