"""Neural-network modules of energyflow."""
from energyflow.nn.losses import EnergyDistanceLoss, EnergyScoreLoss

__all__ = ["EnergyDistanceLoss", "EnergyScoreLoss"]
