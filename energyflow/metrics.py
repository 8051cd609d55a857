"""Kept so that ``energyflow.metrics`` imports keep working: the code lives in
:mod:`energyflow.training.metrics`."""

from energyflow.training.metrics import *  # noqa: F403
from energyflow.training.metrics import __all__  # noqa: F401
