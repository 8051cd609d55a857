"""Generative models trained with or without likelihoods (see ``energyflow.models.base``).

``MODELS`` is the one table of model names (the CLI's ``--model`` choices); ``build_model``
builds one from that name and the options its constructor takes.
"""

from __future__ import annotations

import inspect

from energyflow.models.base import GenerativeModel, load_model
from energyflow.models.flow import BlockAffineFlow
from energyflow.models.generator import SemiAutoregressiveGenerator
from energyflow.models.image import ImageGenerator

MODELS: dict[str, type[GenerativeModel]] = {
    "saef": SemiAutoregressiveGenerator,
    "affine": BlockAffineFlow,
    "image": ImageGenerator,
}


def build_model(name: str, features: int, **options) -> GenerativeModel:
    """``MODELS[name](features, **options)``, keeping only the options that model takes and that
    are not None (so one set of options, such as the CLI's, serves every model).

    Example:
        >>> build_model("saef", 2, blocks=1, transforms=4, hidden_features=(16,)).features
        2
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}; got {name!r}")
    cls = MODELS[name]
    accepted = inspect.signature(cls.__init__).parameters
    kept = {key: value for key, value in options.items() if key in accepted and value is not None}
    return cls(features, **kept)


__all__ = [
    "MODELS",
    "BlockAffineFlow",
    "GenerativeModel",
    "ImageGenerator",
    "SemiAutoregressiveGenerator",
    "build_model",
    "load_model",
]
