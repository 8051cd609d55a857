"""Neural-network modules of energyflow."""

from energyflow.nn.losses import EnergyDistanceLoss, EnergyScoreLoss
from energyflow.nn.masked import BlockMaskedLinear, SemiAutoregressiveMLP, SteppingState

__all__ = [
    "BlockMaskedLinear",
    "EnergyDistanceLoss",
    "EnergyScoreLoss",
    "SemiAutoregressiveMLP",
    "SteppingState",
]
