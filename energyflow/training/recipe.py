"""The recommended recipe: the settings ``fit`` and ``energyflow train`` use when none are given.

Chosen from the ablation in benchmarks/results/study_ablation.md (digits, one factor at a time,
3 seeds per cell, equal wall-clock budget, C2ST as the judge; then the helpful factors together).
Alone, each of these improved on the earlier defaults by more than a seed's spread: beta 0.5
instead of 1, twice as many noise features as data features, learning rate 3e-3, one block
(K = 1), wider or residual hidden layers. The score and sliced estimators, bigger batches on 64
features (the pairs cost more than the extra rows gain within a budget), warm-up and weight
averaging did not help there and are not part of it. It adapts to the data:

  batch size   BATCH_FEW_FEATURES for D <= 8 (pairs are cheap in few dimensions), else
               BATCH_MANY_FEATURES; never more than the training rows
  width        256 for D < 32, else 512
  validation   10% of the rows held out (best weights kept) when there are at least 200 rows
Maximum likelihood keeps its usual settings (batch 256, learning rate 1e-3).
"""

from __future__ import annotations

__all__ = [
    "ENERGY_RECIPE",
    "MLE_RECIPE",
    "recommended_model_options",
    "recommended_settings",
]

BATCH_FEW_FEATURES, BATCH_MANY_FEATURES = 1024, 512
ENERGY_RECIPE = {"beta": 0.5, "lr": 3e-3}
MLE_RECIPE = {"beta": 1.0, "lr": 1e-3, "batch_size": 256}
VALIDATION_FRACTION, VALIDATION_MIN_ROWS = 0.1, 200


def recommended_settings(rows: int, features: int, objective: str = "energy") -> dict:
    """TrainConfig fields of the recipe for ``rows`` training rows of ``features`` features.

    Example:
        >>> recommended_settings(20000, 2)
        {'beta': 0.5, 'lr': 0.003, 'batch_size': 1024, 'val_fraction': 0.1}
    """
    batch = BATCH_FEW_FEATURES if features <= 8 else BATCH_MANY_FEATURES
    settings = {**ENERGY_RECIPE, "batch_size": batch}
    if objective == "mle":
        settings.update(MLE_RECIPE)
    settings["batch_size"] = max(2, min(settings["batch_size"], rows))
    settings["val_fraction"] = VALIDATION_FRACTION if rows >= VALIDATION_MIN_ROWS else 0.0
    return settings


def recommended_model_options(features: int, model: str = "saef") -> dict:
    """Constructor options for ``MODELS[model]`` ("saef" or "affine") on ``features`` features.

    Example:
        >>> recommended_model_options(64)
        {'blocks': 1, 'hidden_features': (512, 512, 512), 'residual': True, 'noise_features': 128}
    """
    width = 256 if features < 32 else 512
    if model == "saef":
        return {
            "blocks": 1,
            "hidden_features": (width,) * 3,
            "residual": True,
            "noise_features": 2 * features,
        }
    return {"blocks": min(features, 4), "transforms": 4, "hidden_features": (width, width)}
