"""What a finished run reports: metrics.json (the strong judges on held-out rows, how the run
went and why it stopped, the loss and validation curves), samples.png and loss_curve.png."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from energyflow import metrics
from energyflow._io import atomic_write_json
from energyflow.cli.run_folder import LOSS_CURVE, METRICS, PICTURE
from energyflow.models import GenerativeModel
from energyflow.training.data import Dataset
from energyflow.training.plots import save_loss_curve_png, save_samples_png

__all__ = ["evaluate", "optional_state", "summary_line", "training_summary", "write_report"]

# most points of a curve metrics.json keeps (evenly spaced steps; the last one always)
CURVE_POINTS = 500
# held-out rows a report judges (as many samples), and the samples of its KDE likelihood
REPORT_ROWS, KDE_SAMPLES = 5000, 10000


def _samples(model: GenerativeModel, dataset: Dataset, rows: int) -> torch.Tensor:
    context = dataset.context_test
    with torch.no_grad():
        if context is None:
            return model.sample((rows,)).cpu()
        return model.sample((), torch.as_tensor(context[:rows]).to(model.loc.device)).cpu()


def evaluate(
    model: GenerativeModel, dataset: Dataset, *, rows: Optional[int] = None, full: bool = False
) -> dict:
    """Test metrics of a model (sampled on its device, scored on the CPU) against up to ``rows``
    held-out rows (default ``REPORT_ROWS``): the energy distance; with ``full``, the strong judges
    (``energyflow.metrics.judge``), MMD and the likelihoods (the sbibm MLP C2ST, a weaker judge,
    is ``energyflow.metrics.c2st_mlp``: the studies report it, a run does not pay for it)."""
    test = torch.as_tensor(dataset.test[: REPORT_ROWS if rows is None else rows])
    return _scores(model, dataset, _samples(model, dataset, len(test)), test, full)


def _scores(
    model: GenerativeModel, dataset: Dataset, samples: torch.Tensor, test: torch.Tensor, full: bool
) -> dict:
    result = {"test_energy_distance": metrics.sample_energy_distance(samples, test)}
    if full:
        result.update(metrics.judge(samples, test))
        result["mmd"] = metrics.mmd(samples, test)
        if dataset.context_test is None:
            many = model.sample((KDE_SAMPLES,)).cpu()
            result["kde_log_likelihood_estimate"] = metrics.kde_log_likelihood(many, test)
        if model.has_density:
            context = None if dataset.context_test is None else dataset.context_test[: len(test)]
            result["log_likelihood"] = metrics.log_likelihood(model, test, context)
        labels = _sample_labels(dataset, len(test))
        if labels is not None:
            result.update(
                metrics.class_accuracy(
                    samples, labels, dataset.train, dataset.labels_train,
                    held_out=test, held_out_labels=labels,
                )
            )  # fmt: skip
    return result


def _sample_labels(dataset: Dataset, rows: int):
    """The classes the first ``rows`` samples were drawn for (class-conditional image runs,
    whose context is the one-hot class of the held-out rows), else None."""
    if dataset.labels_test is None or dataset.context_test is None:
        return None
    return dataset.labels_test[:rows]


def _curve(history: list[dict], key: str) -> list[list[float]]:
    """[step, value] pairs of ``key`` in ``history``, at most CURVE_POINTS of them."""
    points = [[h["step"], h[key]] for h in history if key in h]
    if len(points) <= CURVE_POINTS:
        return points
    stride = len(points) / CURVE_POINTS
    kept = [points[int(i * stride)] for i in range(CURVE_POINTS - 1)]
    return kept + [points[-1]]


def training_summary(state) -> dict:
    """How a run (its TrainState) went: steps, seconds, why it stopped, the best validation and
    its step, and the loss, validation and test-distance curves."""
    history = state.history
    return {
        "steps": state.step,
        "seconds": state.seconds,
        "seconds_per_step": state.seconds / max(state.step, 1),
        "stopped_by": state.stopped_by,
        "best_step": state.best_step if state.best_val is not None else None,
        "best_val_loss": state.best_val,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_curve": _curve(history, "loss"),
        "val_curve": _curve(history, "val_loss"),
        "test_energy_distance_curve": _curve(history, "test_energy_distance"),
    }


def write_report(
    model: GenerativeModel, dataset: Dataset, out: Path, state=None, *, title: str = ""
) -> dict:
    """Judge ``model`` and write metrics.json, samples.png and, with the run's ``state``,
    loss_curve.png into ``out``; returns what metrics.json holds."""
    test = torch.as_tensor(dataset.test[:REPORT_ROWS])
    samples = _samples(model, dataset, len(test))  # judged, and the first 2000 shown
    result = {
        **(training_summary(state) if state is not None else {}),
        **_scores(model, dataset, samples, test, full=True),
    }
    atomic_write_json(result, out / METRICS)
    save_samples_png(
        out / PICTURE,
        samples[:2000].numpy(),
        dataset.test[:2000],
        dataset.image_shape,
        title or type(model).__name__,
        labels=_sample_labels(dataset, 2000),
    )
    if state is not None and state.history:
        save_loss_curve_png(out / LOSS_CURVE, state.history, title or type(model).__name__)
    return result


def summary_line(result: dict) -> str:
    """The judges in one line, as the commands print them."""
    return (
        f"C2ST {result['c2st']:.3f} (boosted trees {result['c2st_boosted_trees']:.3f}, k-NN "
        f"{result['c2st_knn']:.3f}; 0.5 is best), precision {result['precision']:.3f}, recall "
        f"{result['recall']:.3f}, off-support share {result['off_support_share']:.4f} (the "
        f"data's own: 0.001), test energy distance {result['test_energy_distance']:.4f}"
        + (
            f", class accuracy {result['class_accuracy']:.3f} (on real images "
            f"{result['class_accuracy_real']:.3f})"
            if "class_accuracy" in result
            else ""
        )
    )


def optional_state(checkpoint: Path, device: torch.device) -> Optional[object]:
    """The TrainState saved in a run's checkpoint, or None without one."""
    from energyflow.training.fit import TrainState

    if not checkpoint.exists():
        return None
    saved = torch.load(checkpoint, map_location=device, weights_only=False)
    return TrainState(**saved["state"])
