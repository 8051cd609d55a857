"""The loss modules wrap the functional ops."""

from __future__ import annotations

import torch

import energyflow as ef
from energyflow.nn import EnergyDistanceLoss, EnergyScoreLoss


def test_losses_modules():
    samples, target = torch.randn(3, 4, 2), torch.randn(3, 2)
    assert torch.allclose(EnergyScoreLoss()(samples, target), ef.energy_score(samples, target))
    data, model = torch.randn(10, 2), torch.randn(8, 2, requires_grad=True)
    loss = EnergyDistanceLoss()(data, model)
    assert torch.allclose(loss, ef.energy_distance(data, model, include_xx=False))
    loss.backward()
    assert model.grad is not None and torch.isfinite(model.grad).all()
    assert "beta=1.0" in repr(EnergyDistanceLoss())
