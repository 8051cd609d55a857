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


def samples_figure(
    samples: np.ndarray,
    data: np.ndarray,
    image_shape: Optional[tuple[int, int]] = None,
    title: str = "model samples",
):
    """A matplotlib figure comparing model samples with data."""
    plt = _pyplot()
    if image_shape is not None:
        rows, cols = 6, 8
        fig, axes = plt.subplots(rows, 2 * cols + 1, figsize=(2 * cols * 0.6 + 0.6, rows * 0.6))
        for r in range(rows):
            for c in range(2 * cols + 1):
                ax = axes[r, c]
                ax.axis("off")
                if c == cols:
                    continue
                source, index = (
                    (data, r * cols + c) if c < cols else (samples, r * cols + c - cols - 1)
                )
                if index < len(source):
                    ax.imshow(source[index].reshape(image_shape), cmap="gray_r", vmin=0, vmax=1)
        fig.suptitle(f"data (left) vs {title} (right)")
        return fig
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
) -> None:
    """Write the comparison picture atomically. Non-finite samples are left out (their count goes
    into the title); degenerate data (constant columns, a handful of rows) that the richer
    layouts cannot draw falls back to a plain scatter."""
    plt = _pyplot()
    finite = np.isfinite(samples).all(axis=1)
    if not finite.all():
        title = f"{title} ({int((~finite).sum())} non-finite left out)"
        samples = samples[finite]
    try:
        fig = samples_figure(samples, data, image_shape, title)
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
