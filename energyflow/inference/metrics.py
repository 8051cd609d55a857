"""How good a posterior is: C2ST against reference draws, as the SBI literature defines it
(sbibm, Lueckmann et al. 2021), and a corner plot of posterior draws against the reference."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from energyflow._io import atomic_write_bytes

__all__ = ["c2st", "corner_plot"]


def c2st(samples: Tensor, reference: Tensor, *, seed: int = 0, folds: int = 5) -> float:
    """Classifier two-sample test of ``samples`` (N, D) against ``reference`` (M, D): both
    z-scored with the reference's mean and std, an MLP classifier with two hidden layers of
    10 x D units (ReLU, Adam, up to 10,000 iterations), and the mean accuracy of ``folds``-fold
    stratified cross-validation. 0.5: indistinguishable; 1: separable.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> same = c2st(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g))
        >>> apart = c2st(torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 3)
        >>> same < 0.6 < 0.95 < apart
        True
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    a = torch.as_tensor(samples).double().cpu().numpy()
    b = torch.as_tensor(reference).double().cpu().numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"samples and reference must be (N, D) alike, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("samples or reference hold NaN or inf")
    mean, std = b.mean(0), b.std(0) + 1e-12
    features = np.concatenate([(a - mean) / std, (b - mean) / std])
    labels = np.concatenate([np.zeros(len(a)), np.ones(len(b))])
    dim = a.shape[1]
    classifier = MLPClassifier(
        hidden_layer_sizes=(10 * dim, 10 * dim), max_iter=10000, solver="adam", random_state=seed
    )
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(
        np.mean(cross_val_score(classifier, features, labels, cv=split, scoring="accuracy"))
    )


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
                if ref is not None:
                    ax.scatter(ref[:, j], ref[:, i], s=0.5, color="grey", alpha=0.2)
                ax.scatter(values[:, j], values[:, i], s=0.5, color="C0", alpha=0.2)
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
