"""Judging samples by what the model did not optimise (docs/math.md, section 8).

Every judge takes tensors or arrays of rows (N, D) and returns plain floats:

- ``judge``: all the strong judges at once (what every report uses);
- ``c2st`` (the stronger of ``c2st_boosted_trees`` and ``c2st_knn``), ``c2st_mlp`` (the sbibm
  MLP, a named extra): classifier two-sample tests, 0.5 is perfect;
- ``precision_recall``, ``density_coverage``, ``off_support_share``: where the samples lie
  relative to the data;
- ``sample_energy_distance``, ``mmd``: distances, 0 is perfect;
- ``log_likelihood`` (exact, flows) and ``kde_log_likelihood`` (an estimate, for generators);
- ``class_accuracy``: class-conditional models, a classifier trained on real rows reading the
  class each sample was drawn for.
"""

from energyflow.metrics.classes import class_accuracy
from energyflow.metrics.distances import mmd, sample_energy_distance
from energyflow.metrics.judge import JUDGES, judge
from energyflow.metrics.likelihood import kde_log_likelihood, log_likelihood
from energyflow.metrics.support import density_coverage, off_support_share, precision_recall
from energyflow.metrics.two_sample import c2st, c2st_boosted_trees, c2st_knn, c2st_mlp

__all__ = [
    "JUDGES",
    "c2st",
    "c2st_boosted_trees",
    "c2st_knn",
    "c2st_mlp",
    "class_accuracy",
    "density_coverage",
    "judge",
    "kde_log_likelihood",
    "log_likelihood",
    "mmd",
    "off_support_share",
    "precision_recall",
    "sample_energy_distance",
]
