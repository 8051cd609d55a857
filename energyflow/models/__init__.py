"""Generative models trained with or without likelihoods (see ``energyflow.models.base``)."""
from energyflow.models.base import GenerativeModel, load_model
from energyflow.models.flow import BlockAffineFlow
from energyflow.models.generator import SemiAutoregressiveGenerator

__all__ = ["BlockAffineFlow", "GenerativeModel", "SemiAutoregressiveGenerator", "load_model"]
