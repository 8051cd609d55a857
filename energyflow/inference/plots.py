"""A corner plot of posterior draws against reference draws (the judges of a posterior are those
of every sample: ``energyflow.metrics``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from energyflow._io import atomic_write_bytes

__all__ = ["corner_plot"]


def corner_plot(
    samples: Tensor,
    path: Path,
    *,
    reference: Optional[Tensor] = None,
    labels: Optional[Sequence[str]] = None,
    truth: Optional[Tensor] = None,
    title: str = "",
) -> Path:
    """A corner plot PNG of posterior ``samples`` (N, D): histograms on the diagonal, scatter
    below it; ``reference`` draws in grey behind them, ``truth`` as lines. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = torch.as_tensor(samples).cpu().numpy()[:5000]
    ref = None if reference is None else torch.as_tensor(reference).cpu().numpy()[:5000]
    dim = values.shape[1]
    labels = list(labels or [f"theta{i + 1}" for i in range(dim)])
    fig, axes = plt.subplots(dim, dim, figsize=(1.9 * dim + 1, 1.9 * dim + 1), squeeze=False)
    for i in range(dim):
        for j in range(dim):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                both = values[:, i] if ref is None else np.concatenate([values[:, i], ref[:, i]])
                bins = np.linspace(both.min(), both.max(), 50)
                if ref is not None:
                    ax.hist(ref[:, i], bins=bins, color="grey", alpha=0.5, density=True)
                ax.hist(values[:, i], bins=bins, histtype="step", color="C0", density=True)
            else:
                # markers of one Line2D each (a scatter's per-point paths draw 10x slower)
                if ref is not None:
                    ax.plot(ref[:, j], ref[:, i], ".", ms=1, color="grey", alpha=0.2)
                ax.plot(values[:, j], values[:, i], ".", ms=1, color="C0", alpha=0.2)
            if truth is not None:
                ax.axvline(float(truth[j]), color="C3", lw=0.8)
                if i != j:
                    ax.axhline(float(truth[i]), color="C3", lw=0.8)
            if i == dim - 1:
                ax.set_xlabel(labels[j], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(labels[i], fontsize=8)
            ax.tick_params(labelsize=6)
    legend = "blue: posterior draws" + ("; grey: reference" if ref is not None else "")
    fig.suptitle(f"{title}  ({legend})" if title else legend, fontsize=9)
    fig.tight_layout()
    picture = io.BytesIO()
    fig.savefig(picture, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(picture.getvalue(), path)
    return Path(path)
