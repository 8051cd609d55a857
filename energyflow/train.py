"""Kept so that ``energyflow.train`` imports keep working: the code lives in
:mod:`energyflow.training.fit`."""

from energyflow.training.fit import *  # noqa: F403
from energyflow.training.fit import __all__  # noqa: F401
