"""Class fidelity of a class-conditional model: does a classifier trained on real rows read the
class a sample was drawn for?"""

from __future__ import annotations

import numpy as np

from energyflow.metrics._rows import ArrayLike, as_rows, same_features

__all__ = ["class_accuracy"]

# real rows the classifier is trained on, at most (a logistic regression on 10^4 rows of 784
# pixels takes ~20 s on 2 cores)
CLASSIFIER_ROWS = 10000


def class_accuracy(
    samples: ArrayLike,
    sample_labels: ArrayLike,
    real: ArrayLike,
    real_labels: ArrayLike,
    *,
    held_out: ArrayLike | None = None,
    held_out_labels: ArrayLike | None = None,
    seed: int = 0,
) -> dict:
    """Accuracy on ``samples`` (N, D) drawn for classes ``sample_labels`` (N,) of a classifier
    (standardised features, multinomial logistic regression) trained on ``real`` rows (M, D) of
    classes ``real_labels`` (M,); with ``held_out`` real rows and labels, its accuracy on them
    too (what a perfect model's samples would score).

    Returns:
        ``{"class_accuracy": ..., "class_accuracy_real": ...}`` (the second with held_out).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows, train = as_rows(samples, "samples"), as_rows(real, "real")
    same_features(rows, train, ("samples", "real"))
    labels, train_labels = np.asarray(sample_labels), np.asarray(real_labels)
    if labels.shape != (len(rows),) or train_labels.shape != (len(train),):
        raise ValueError(
            f"one label per row: samples {tuple(rows.shape)} with labels {labels.shape}, real "
            f"{tuple(train.shape)} with labels {train_labels.shape}"
        )
    chosen = np.random.default_rng(seed).permutation(len(train))[:CLASSIFIER_ROWS]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    classifier.fit(train.numpy()[chosen], train_labels[chosen])
    result = {"class_accuracy": float(classifier.score(rows.numpy(), labels))}
    if held_out is not None:
        real_rows = as_rows(held_out, "held_out").numpy()
        result["class_accuracy_real"] = float(classifier.score(real_rows, held_out_labels))
    return result
