"""Kept so that ``energyflow.data`` imports keep working: the code lives in
:mod:`energyflow.training.data`."""

from energyflow.training.data import *  # noqa: F403
from energyflow.training.data import __all__  # noqa: F401
