"""The import paths the README documented before the ops/training split keep working."""

import energyflow.data
import energyflow.metrics
import energyflow.train
from energyflow.training import data, fit, metrics


def test_documented_import_paths_are_the_moved_modules():
    assert energyflow.train.fit is fit.fit and energyflow.train.TrainConfig is fit.TrainConfig
    assert energyflow.metrics.c2st is metrics.c2st
    assert energyflow.metrics.sample_energy_distance is metrics.sample_energy_distance
    assert energyflow.data.load_dataset is data.load_dataset
    from energyflow import functional, models, nn  # noqa: F401

    assert functional.energy_distance is energyflow.energy_distance
    assert {"SemiAutoregressiveGenerator", "BlockAffineFlow", "load_model"} <= set(models.__all__)
    assert {"BlockMaskedLinear", "EnergyDistanceLoss", "SemiAutoregressiveMLP"} <= set(nn.__all__)
