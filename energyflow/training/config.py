"""The settings of a training run (``TrainConfig``) and the checks made before one starts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from torch import Tensor

from energyflow.models.base import GenerativeModel
from energyflow.ops.value_range import check_finite
from energyflow.training.device import PRECISIONS
from energyflow.training.recipe import recommended_settings

OBJECTIVES = ("energy", "mle", "hybrid")
ESTIMATORS = ("distance", "score", "sliced")

__all__ = [
    "ESTIMATORS",
    "OBJECTIVES",
    "TrainConfig",
    "check_setup",
    "default_estimator",
    "with_recipe",
]


@dataclass
class TrainConfig:
    """Settings of one training run (``energyflow.training.fit`` explains each).

    Fields left ``None`` take the recommended recipe for the data (``training.recipe``).

    objective: "energy" (samples only), "mle" (flows), or "hybrid" (energy + ``hybrid_weight`` x
        negative log-likelihood per feature, flows). estimator: of the energy; ``None`` picks
        ``default_estimator``. beta: exponent of the energy, in (0, 2).
    kernel_weight, kernel_bandwidth; variogram_weight, variogram_power: terms added to the energy
        score of the "score" estimator (``functional.kernel_score`` with bandwidth h in
        standardised units, ``functional.variogram_score`` of order p; docs/math.md, 2.1);
        weight 0: off.
    steps, batch_size (the global batch: split over processes), lr, warmup_steps: the run and
        its schedule (``energyflow.training.schedule``); time_budget: seconds (``None``: no
        limit); the schedule ends at the budget.
    ema: decay of the weight average used for validation and the final model (0: off).
    val_fraction: rows held out to validate on every ``val_every`` steps; the best weights by
        the validation objective are kept, and ``patience`` validations without improvement end
        the run (0: never early).
    device, precision ("fp32", "bf16", "fp16"), compile: where and how the steps run.
    """

    objective: str = "energy"
    estimator: Optional[str] = None
    beta: Optional[float] = None
    samples_per_target: int = 2
    hybrid_weight: float = 1.0
    kernel_weight: float = 0.0
    kernel_bandwidth: float = 0.5
    variogram_weight: float = 0.0
    variogram_power: float = 0.5
    steps: int = 1000
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    warmup_steps: int = 0
    time_budget: Optional[float] = None
    ema: float = 0.0
    val_fraction: Optional[float] = None
    val_every: int = 100
    patience: int = 0
    seed: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False


def with_recipe(config: TrainConfig, rows: int, features: int) -> TrainConfig:
    """A copy of ``config`` whose ``None`` fields hold the recipe for ``rows`` training rows of
    ``features`` features (``training.recipe.recommended_settings``).

    Example:
        >>> with_recipe(TrainConfig(lr=1e-4), rows=5000, features=2).lr
        0.0001
    """
    recipe = recommended_settings(rows, features, config.objective)
    if config.estimator == "sliced":  # the sliced estimator computes beta = 1 only
        recipe["beta"] = 1.0
    values = asdict(config)
    return TrainConfig(
        **{k: recipe[k] if v is None and k in recipe else v for k, v in values.items()}
    )


def default_estimator(conditional: bool) -> str:
    """The energy estimator used when none is named: the score for conditional models (each
    row's samples share its context), else the distance (all N x M cross pairs)."""
    return "score" if conditional else "distance"


def _check_numbers(config: TrainConfig) -> None:
    rules = [
        ("steps", config.steps >= 1, "an integer >= 1"),
        ("batch_size", config.batch_size >= 2, "an integer >= 2"),
        ("lr", config.lr > 0 and math.isfinite(config.lr), "a positive number"),
        ("beta", 0 < config.beta < 2, "in (0, 2)"),
        ("warmup_steps", config.warmup_steps >= 0, ">= 0"),
        ("ema", 0 <= config.ema < 1, "in [0, 1) (0: off)"),
        ("val_fraction", 0 <= config.val_fraction < 1, "in [0, 1)"),
        ("val_every", config.val_every >= 1, ">= 1"),
        ("patience", config.patience >= 0, ">= 0 (0: no early stop)"),
        ("hybrid_weight", config.hybrid_weight >= 0, ">= 0"),
        ("kernel_weight", config.kernel_weight >= 0, ">= 0 (0: off)"),
        ("kernel_bandwidth", 0 < config.kernel_bandwidth < math.inf, "a positive number"),
        ("variogram_weight", config.variogram_weight >= 0, ">= 0 (0: off)"),
        ("variogram_power", 0 < config.variogram_power <= 2, "in (0, 2]"),
    ]
    if config.time_budget is not None:
        rules.append(("time_budget", config.time_budget > 0, "a positive number of seconds"))
    for name, ok, rule in rules:
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {getattr(config, name)!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {config.precision!r}")


def check_setup(
    model: GenerativeModel, config: TrainConfig, data: Tensor, context: Optional[Tensor]
) -> None:
    """Raise a ValueError naming the setting if ``model`` cannot be trained so on ``data``
    (``None`` settings are checked as the recipe fills them)."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {config.objective!r}")
    if data.dim() == 2:
        config = with_recipe(config, len(data), data.shape[1])
    if config.estimator is not None and config.estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {config.estimator!r}")
    if config.objective != "energy" and not model.has_density:
        raise ValueError(
            f"objective={config.objective!r} needs a model with a density; "
            f"{type(model).__name__} has none (use 'energy')"
        )
    _check_numbers(config)
    if data.dim() != 2 or data.shape[1] != model.features:
        raise ValueError(f"data must be (N, {model.features}), got shape {tuple(data.shape)}")
    check_finite("data", data)  # a NaN met later is the model's own (fit: a diverged run)
    if context is not None:
        check_finite("context", context)
    if (context is None) != (model.context_features == 0):
        raise ValueError("pass context exactly when the model has context features")
    if context is not None and context.shape != (len(data), model.context_features):
        raise ValueError(
            f"context must be ({len(data)}, {model.context_features}), one row per data row; "
            f"got shape {tuple(context.shape)}"
        )
    estimator = config.estimator or default_estimator(context is not None)
    if context is not None and config.objective != "mle" and estimator != "score":
        raise ValueError(
            "a conditional model needs estimator='score' (samples per target share its context)"
        )
    if config.samples_per_target < 2 and estimator == "score":
        raise ValueError("estimator='score' needs samples_per_target >= 2")
    for term in ("kernel", "variogram"):
        if getattr(config, f"{term}_weight") and (
            estimator != "score" or config.objective == "mle"
        ):
            raise ValueError(
                f"{term}_weight adds a {term} score term to the energy score of "
                f"estimator='score' (m samples per target); got objective={config.objective!r}, "
                f"estimator={estimator!r}: use estimator='score' or set {term}_weight=0"
            )
    if config.variogram_weight and data.shape[1] < 2:
        raise ValueError("variogram_weight needs at least 2 features (it scores feature pairs)")
    if estimator == "sliced" and config.beta != 1.0:
        raise ValueError("estimator='sliced' computes beta = 1 only; drop beta or use 'distance'")
    held_out = math.ceil(config.val_fraction * len(data))
    if config.val_fraction and (held_out < 2 or len(data) - held_out < 2):
        raise ValueError(
            f"val_fraction={config.val_fraction} of {len(data)} rows leaves too few rows to "
            "train or validate on (at least 2 each)"
        )
