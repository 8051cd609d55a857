"""The settings of a training run (``TrainConfig``) and the checks made before one starts.

Every field is declared once, with its help text and its rule (``setting``): ``fit`` reads the
dataclass, ``check_setup`` checks the rules, and the command line builds its ``energyflow
train`` flags from the same declarations (``energyflow.cli.settings``), so a new training option
is one line here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Optional

from torch import Tensor

from energyflow.models.base import STANDARDISATIONS, GenerativeModel
from energyflow.models.image import ImageGenerator
from energyflow.ops.value_range import check_finite
from energyflow.training.device import PRECISIONS
from energyflow.training.recipe import recommended_settings

OBJECTIVES = ("energy", "mle", "hybrid")
ESTIMATORS = ("distance", "score", "sliced", "block_score")
# The length of a run that names neither steps nor a time budget.
DEFAULT_STEPS = 2000

__all__ = [
    "DEFAULT_STEPS",
    "ESTIMATORS",
    "OBJECTIVES",
    "TrainConfig",
    "check_setup",
    "check_values",
    "default_estimator",
    "setting",
    "with_recipe",
]


@dataclass(frozen=True)
class Rule:
    """What a setting's value must be: ``test(value)`` true, described as ``text``."""

    test: Callable[[Any], bool]
    text: str


AT_LEAST_1 = Rule(lambda v: v >= 1, "an integer >= 1")
AT_LEAST_2 = Rule(lambda v: v >= 2, "an integer >= 2")
NON_NEGATIVE = Rule(lambda v: v >= 0, ">= 0")
POSITIVE = Rule(lambda v: 0 < v < math.inf, "a positive number")
FRACTION = Rule(lambda v: 0 <= v < 1, "in [0, 1)")
BETA = Rule(lambda v: 0 < v < 2, "in (0, 2)")
POWER = Rule(lambda v: 0 < v <= 2, "in (0, 2]")


def setting(
    default: Any,
    help: str,
    *,
    rule: Optional[Rule] = None,
    choices: Optional[tuple] = None,
    command_line: bool = True,
) -> Any:
    """A dataclass field declared with its help text, rule and choices (``None`` values are
    unset: the recipe fills them, and no rule applies); ``command_line=False`` keeps it off the
    ``energyflow train`` flags."""
    metadata = {"help": help, "rule": rule, "choices": choices, "command_line": command_line}
    return field(default=default, metadata=metadata)


def check_values(settings: Any) -> None:
    """Raise a ValueError naming the first field of a ``setting``-declared dataclass whose value
    breaks its rule or choices."""
    for spec in fields(settings):
        value = getattr(settings, spec.name)
        if value is None:
            continue
        rule, choices = spec.metadata.get("rule"), spec.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{spec.name} must be one of {choices}, got {value!r}")
        values = value if isinstance(value, (list, tuple)) else [value]  # a list: each element
        if rule is not None and not all(rule.test(v) for v in values):
            raise ValueError(f"{spec.name} must be {rule.text}, got {value!r}")


@dataclass
class TrainConfig:
    """Settings of one training run (``energyflow.training.fit`` explains the loop); fields left
    ``None`` take the recommended recipe for the data (``training.recipe``)."""

    objective: str = setting(
        "energy",
        "energy (samples only); mle, hybrid (energy + hybrid_weight x NLL per feature): flows",
        choices=OBJECTIVES,
    )
    estimator: Optional[str] = setting(
        None,
        "of the energy (default: distance; score for conditional models; block_score for images)",
        choices=ESTIMATORS,
    )
    beta: Optional[float] = setting(None, "exponent of the energy (recipe: 0.5)", rule=BETA)
    standardisation: Optional[str] = setting(
        None,
        "the units the model learns in: moments (mean / std) or quantile (each feature through "
        "its data quantiles to normal units; recipe: quantile above 8 features for the energy "
        "objective, else moments)",
        choices=STANDARDISATIONS,
    )
    samples_per_target: int = setting(
        2, "m samples per data row (score, block_score)", rule=AT_LEAST_2
    )
    hybrid_weight: float = setting(1.0, "weight of the NLL term (hybrid)", rule=NON_NEGATIVE)
    kernel_weight: float = setting(
        0.0, "Gaussian kernel score term beside the energy score (score; 0: off)", rule=NON_NEGATIVE
    )
    kernel_bandwidth: float = setting(0.5, "its bandwidth h, in standardised units", rule=POSITIVE)
    variogram_weight: float = setting(
        0.0, "variogram score term beside the energy score (score; 0: off)", rule=NON_NEGATIVE
    )
    variogram_power: float = setting(0.5, "its order p", rule=POWER)
    steps: Optional[int] = setting(
        None,
        f"step cap (default: none with a time budget, else {DEFAULT_STEPS}); the schedule ends "
        "at the first of steps and budget",
        rule=AT_LEAST_1,
    )
    time_budget: Optional[float] = setting(
        None, "seconds of training: the run's length, where the schedule ends", rule=POSITIVE
    )
    batch_size: Optional[int] = setting(
        None,
        "global batch (recipe: energy 1024 for D <= 8, else 512, image model 128; mle 256; "
        "at most the rows)",
        rule=AT_LEAST_2,
    )
    lr: Optional[float] = setting(
        None, "learning rate (recipe: energy 3e-3, mle 1e-3)", rule=POSITIVE
    )
    warmup_steps: int = setting(0, "linear learning-rate warm-up", rule=NON_NEGATIVE)
    ema: float = setting(
        0.0, "weight-average decay for validation and the model (0: off)", rule=FRACTION
    )
    val_fraction: Optional[float] = setting(
        None, "rows held out; the best weights are kept (recipe: 0.1 from 200 rows)", rule=FRACTION
    )
    val_every: int = setting(100, "steps between validations", rule=AT_LEAST_1)
    patience: int = setting(
        0, "validations without improvement that end the run (0: never)", rule=NON_NEGATIVE
    )
    seed: int = setting(0, "the run's random stream (rows, noise, initial weights)")
    eval_every: int = setting(500, "steps between test metrics (0: none)", rule=NON_NEGATIVE)
    checkpoint_every: int = setting(
        500, "steps between checkpoints (0: at the end only)", rule=NON_NEGATIVE
    )
    device: str = setting("auto", "auto (CUDA if present), cpu, cuda or cuda:i")
    precision: str = setting("fp32", "bf16/fp16: autocast the networks", choices=PRECISIONS)
    compile: bool = setting(False, "torch.compile the loss")

    def planned_steps(self) -> Optional[int]:
        """The step cap: ``steps``, else none under a time budget, else DEFAULT_STEPS.

        Example:
            >>> TrainConfig().planned_steps(), TrainConfig(time_budget=60).planned_steps()
            (2000, None)
        """
        if self.steps is not None or self.time_budget is not None:
            return self.steps
        return DEFAULT_STEPS


def with_recipe(
    config: TrainConfig, rows: int, features: int, *, images: bool = False
) -> TrainConfig:
    """A copy of ``config`` whose ``None`` fields hold the recipe for ``rows`` training rows of
    ``features`` features, of the image model if ``images``
    (``training.recipe.recommended_settings``).

    Example:
        >>> with_recipe(TrainConfig(lr=1e-4), rows=5000, features=2).lr
        0.0001
    """
    recipe = recommended_settings(rows, features, config.objective, images=images)
    if config.estimator == "sliced":  # the sliced estimator computes beta = 1 only
        recipe["beta"] = 1.0
    values = asdict(config)
    return TrainConfig(
        **{k: recipe[k] if v is None and k in recipe else v for k, v in values.items()}
    )


def default_estimator(conditional: bool, model: Optional[type] = None) -> str:
    """The energy estimator used when none is named: the model (class or instance)'s own
    ``default_estimator`` where it sets one (image models: "block_score"), else the score for
    conditional models (each row's samples share its context), else the distance (all N x M
    cross pairs)."""
    own = getattr(model, "default_estimator", None)
    return own or ("score" if conditional else "distance")


def check_setup(
    model: GenerativeModel, config: TrainConfig, data: Tensor, context: Optional[Tensor]
) -> None:
    """Raise a ValueError naming the setting if ``model`` cannot be trained so on ``data``
    (``None`` settings are checked as the recipe fills them)."""
    check_values(config)
    if data.dim() == 2:
        config = with_recipe(
            config, len(data), data.shape[1], images=isinstance(model, ImageGenerator)
        )
    if config.objective != "energy" and not model.has_density:
        raise ValueError(
            f"objective={config.objective!r} needs a model with a density; "
            f"{type(model).__name__} has none (use 'energy')"
        )
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
    estimator = config.estimator or default_estimator(context is not None, model)
    if estimator == "block_score" and not hasattr(model, "rsample_blocks_standardised"):
        raise ValueError(
            f"estimator='block_score' scores each block given the true earlier blocks, which "
            f"{type(model).__name__} cannot sample in one pass; use 'distance' or 'score' (or "
            "the image model)"
        )
    scored = ("score", "block_score")
    if context is not None and config.objective != "mle" and estimator not in scored:
        raise ValueError(
            "a conditional model needs estimator='score' or 'block_score' (samples per target "
            "share its context)"
        )
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
