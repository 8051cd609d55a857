"""Pictures of samples: scatter for 2-D, image grids for images, pair plots otherwise."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np

from energyflow._io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mosaic(grid: list[list], image_shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
    """One picture of a grid of flattened images (None: an empty cell), a 1-pixel white gap
    between them: (rows, cols) gray values in the data's units, or (rows, cols, 3) in [0, 1]
    for three channels (other channel counts show their first channel)."""
    channels, height, width = image_shape
    colour = channels == 3
    cell_h, cell_w = height + 1, width + 1
    shape = (len(grid) * cell_h + 1, len(grid[0]) * cell_w + 1) + ((3,) if colour else ())
    canvas = np.full(shape, 1.0 if colour else low)
    for r, line in enumerate(grid):
        for c, row in enumerate(line):
            if row is None:
                continue
            image = np.asarray(row, dtype=np.float64).reshape(image_shape)
            if colour:
                tile = np.clip((image.transpose(1, 2, 0) - low) / max(high - low, 1e-12), 0, 1)
            else:
                tile = image[0]
            canvas[1 + r * cell_h : (r + 1) * cell_h, 1 + c * cell_w : (c + 1) * cell_w] = tile
    return canvas


def _image_grid_figure(
    samples: np.ndarray,
    data: np.ndarray,
    image_shape: tuple[int, ...],
    title: str,
    labels: Optional[np.ndarray],
):
    """Data (left) and samples (right), 6 rows of 8; with ``labels`` (one class per sample),
    one row per class of up to 12 of its samples. One mosaic, drawn once."""
    plt = _pyplot()
    low, high = float(np.min(data)), float(np.max(data))
    if labels is not None:
        classes = np.unique(labels)
        cols = 12
        grid = [[*samples[labels == k][:cols]] for k in classes]
        grid = [line + [None] * (cols - len(line)) for line in grid]
        suptitle = f"{title}: one row per class"
    else:
        rows, cols = 6, 8

        def cells(source: np.ndarray, r: int) -> list:
            return [
                source[r * cols + c] if r * cols + c < len(source) else None for c in range(cols)
            ]

        grid = [cells(data, r) + [None] + cells(samples, r) for r in range(rows)]
        suptitle = f"data (left) vs {title} (right)"
    canvas = _mosaic(grid, image_shape, low, high)
    height, width = canvas.shape[:2]
    fig, ax = plt.subplots(figsize=(0.05 * width + 0.8, 0.05 * height + 0.6))
    ax.imshow(canvas, cmap="gray_r", vmin=low, vmax=high, interpolation="nearest")
    ax.set_xticks([])
    if labels is not None:
        cell = image_shape[1] + 1
        ax.set_yticks(
            [1 + cell * r + cell / 2 - 1 for r in range(len(grid))], [str(k) for k in classes]
        )
        ax.tick_params(length=0, labelsize=7)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(suptitle, fontsize=9)
    return fig


def samples_figure(
    samples: np.ndarray,
    data: np.ndarray,
    image_shape: Optional[tuple[int, ...]] = None,
    title: str = "model samples",
    labels: Optional[np.ndarray] = None,
):
    """A matplotlib figure comparing model samples with data: image grids for images (``labels``:
    one row per class), a scatter for 2-D, pair plots otherwise."""
    plt = _pyplot()
    if image_shape is not None:
        return _image_grid_figure(samples, data, image_shape, title, labels)
    dims = min(samples.shape[1], 4)
    if dims <= 2:
        fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        for ax, points, name in ((axes[0], data, "data"), (axes[1], samples, title)):
            ax.scatter(
                points[:, 0],
                points[:, 1] if points.shape[1] > 1 else np.zeros(len(points)),
                s=2,
                alpha=0.5,
            )
            ax.set_title(name)
            ax.set_aspect("equal")
        return fig
    fig, axes = plt.subplots(dims, dims, figsize=(2.2 * dims, 2.2 * dims))
    for i in range(dims):
        for j in range(dims):
            ax = axes[i, j]
            if i == j:
                ax.hist(data[:, i], bins=40, alpha=0.5, density=True, label="data")
                ax.hist(samples[:, i], bins=40, alpha=0.5, density=True, label=title)
            else:
                ax.scatter(data[:, j], data[:, i], s=1, alpha=0.3)
                ax.scatter(samples[:, j], samples[:, i], s=1, alpha=0.3)
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"first {dims} features: data (blue) vs {title} (orange)")
    return fig


def _scatter_figure(samples: np.ndarray, data: np.ndarray, title: str):
    """The plainest picture: the first two columns (or the first against its index)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for points, name in ((data, "data"), (samples, title)):
        y = points[:, 1] if points.shape[1] > 1 else np.arange(len(points))
        ax.scatter(points[:, 0], y, s=2, alpha=0.5, label=name)
    ax.legend(fontsize=7)
    return fig


def save_samples_png(
    path: Path,
    samples: np.ndarray,
    data: np.ndarray,
    image_shape=None,
    title: str = "model samples",
    labels: Optional[np.ndarray] = None,
) -> None:
    """Write the comparison picture atomically. Non-finite samples are left out (their count goes
    into the title); degenerate data (constant columns, a handful of rows) that the richer
    layouts cannot draw falls back to a plain scatter."""
    plt = _pyplot()
    finite = np.isfinite(samples).all(axis=1)
    if not finite.all():
        title = f"{title} ({int((~finite).sum())} non-finite left out)"
        samples = samples[finite]
        labels = None if labels is None else labels[finite]
    try:
        fig = samples_figure(samples, data, image_shape, title, labels)
        fig.tight_layout()
    except (ValueError, IndexError, np.linalg.LinAlgError):
        plt.close("all")
        fig = _scatter_figure(samples, data, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)


def save_loss_curve_png(path: Path, history: list[dict], title: str = "training") -> None:
    """The training loss per step (and the validation loss where measured) against steps,
    written atomically."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], lw=0.6, alpha=0.7, label="training loss (batch)")
    validated = [h for h in history if "val_loss" in h]
    if validated:
        ax.plot(
            [h["step"] for h in validated],
            [h["val_loss"] for h in validated],
            marker="o",
            ms=3,
            label="validation loss",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (standardised units)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
