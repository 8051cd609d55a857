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


def _picture(row: np.ndarray, image_shape: tuple[int, ...], low: float, high: float):
    """A flattened image (C H W) as imshow takes it: (H, W, 3) in [0, 1] for three channels,
    else the first channel (H, W)."""
    image = row.reshape(image_shape)
    if image.shape[0] != 3:
        return image[0]
    return np.clip((image.transpose(1, 2, 0) - low) / max(high - low, 1e-12), 0, 1)


def _image_grid_figure(
    samples: np.ndarray,
    data: np.ndarray,
    image_shape: tuple[int, ...],
    title: str,
    labels: Optional[np.ndarray],
):
    """Data (left) and samples (right), 6 rows of 8; with ``labels`` (one class per sample),
    one row per class of up to 12 of its samples."""
    plt = _pyplot()
    low, high = float(np.min(data)), float(np.max(data))
    if labels is not None:
        classes = np.unique(labels)
        cols = 12
        grid = [
            [samples[labels == k][c] if c < (labels == k).sum() else None for c in range(cols)]
            for k in classes
        ]
        names = [f"{k}" for k in classes]
        suptitle = f"{title}: one row per class"
    else:
        rows, cols = 6, 8
        grid = [
            [data[r * cols + c] if r * cols + c < len(data) else None for c in range(cols)]
            + [None]
            + [samples[r * cols + c] if r * cols + c < len(samples) else None for c in range(cols)]
            for r in range(rows)
        ]
        names = None
        suptitle = f"data (left) vs {title} (right)"
    height, width = len(grid), len(grid[0])
    fig, axes = plt.subplots(
        height, width, figsize=(width * 0.6 + 0.6, height * 0.6 + 0.4), squeeze=False
    )
    for r, line in enumerate(grid):
        for c, row in enumerate(line):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis("off" if names is None or c else "on")
            if c == 0 and names is not None:
                ax.set_ylabel(names[r], rotation=0, labelpad=8, fontsize=7)
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if row is not None:
                ax.imshow(_picture(row, image_shape, low, high), cmap="gray_r", vmin=low, vmax=high)
    fig.suptitle(suptitle)
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
