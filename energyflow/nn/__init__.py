"""Neural-network modules of energyflow."""

from energyflow.nn.losses import EnergyDistanceLoss, EnergyScoreLoss
from energyflow.nn.masked import BlockMaskedLinear, SemiAutoregressiveMLP, SteppingState
from energyflow.nn.masked_conv import BlockMaskedConv2d, SemiAutoregressiveConvNet

__all__ = [
    "BlockMaskedConv2d",
    "BlockMaskedLinear",
    "EnergyDistanceLoss",
    "EnergyScoreLoss",
    "SemiAutoregressiveConvNet",
    "SemiAutoregressiveMLP",
    "SteppingState",
]
