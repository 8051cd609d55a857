"""The recommended recipe: the settings ``fit`` and ``energyflow train`` use when none are given.

Chosen from the ablation in benchmarks/results/study_ablation.md (digits, one factor at a time,
3 seeds per cell, equal wall-clock budget, C2ST as the judge; then the helpful factors together).
Alone, each of these improved on the earlier defaults by more than a seed's spread: beta 0.5
instead of 1, twice as many noise features as data features, learning rate 3e-3, one block
(K = 1), wider or residual hidden layers. The score and sliced estimators, bigger batches on 64
features (the pairs cost more than the extra rows gain within a budget), warm-up and weight
averaging did not help there and are not part of it. It adapts to the data:

  batch size   BATCH_FEW_FEATURES for D <= 8 (pairs are cheap in few dimensions), else
               BATCH_MANY_FEATURES, and BATCH_IMAGES for the image model (digits, 4 layers of
               128 channels, 60 s, seed 0: 652 steps at 128, 340 at 256, C2ST 0.705 against 0.721;
               study_images.md's ablation: batch 64 0.723); never more than the training rows
  width        256 for D < 32, else 512; the generator (SAEF) 128 for D <= 8, where it reaches
               a better C2ST in a budget with 1.6x the steps (study.md, 10 s, 3 seeds:
               checkerboard 0.516 +- 0.008 at 128 against 0.565 +- 0.020 at 256, 8gaussians
               0.532 +- 0.013 against 0.570 +- 0.024)
  latent       for D <= 8, MIXTURE_COMPONENTS discrete components beside uniform continuous
               noise (``noise_distribution="uniform"``: bounded, so the modes get no stretched
               tails; study_fidelity.md, 60 s, 3 seeds: 8 Gaussians' share of samples off the
               modes 0.0014 against 0.0039 with normal noise, off-support share on moons 0.0033
               against 0.0076 and on the checkerboard 0.033 against 0.049, C2ST within a
               seed's spread), else normal noise alone
  validation   10% of the rows held out (best weights kept) when there are at least 200 rows
  units        for D > 8, each feature through its quantiles to normal units ("quantile",
               ``models.quantiles``; benchmarks/results/study_fidelity.md, digits, 60 s,
               3 seeds: boosted-tree C2ST 0.660 +- 0.020 against 0.990 +- 0.004), else
               mean / std ("moments": on 8 Gaussians the per-axis map warped the modes,
               0.555 against 0.512)
Maximum likelihood keeps its usual settings (batch 256, learning rate 1e-3, moments).

Amortised posteriors (``energyflow.inference.fit_posterior``) have their own, from the posterior
study (benchmarks/results/study_posterior.md: two moons, 10^4 simulations, equal wall clock):
4 samples per simulation, batch 256, learning rate 1e-3, 10% validation, and for the generator
K = 1 with two hidden layers of 128 and as many noise features as parameters (D noise
features: C2ST 0.654 +- 0.036 against 0.719 +- 0.015 with 2 x D, 3 seeds, 15 s), and the mean /
std standardisation at any dimension (the quantile one, fitted to the simulations' parameters,
changed nothing beyond a seed's spread: two moons 0.727 against 0.740, SLCP 0.939 against
0.937, one seed, 20 s; the 10-d Gaussian-linear task 0.555 against 0.547 for the affine flow of
its test). Wider layers
(256), more samples per target (8) or bigger batches (1024) reached the same C2ST within a
seed's spread in the same seconds; width 128 samples 4x faster than 256.
"""

from __future__ import annotations

__all__ = [
    "ENERGY_RECIPE",
    "recommended_image_options",
    "MLE_RECIPE",
    "POSTERIOR_RECIPE",
    "recommended_model_options",
    "recommended_posterior_options",
    "recommended_settings",
]

FEW_FEATURES = 8  # up to this many features: the "few features" rules below
MIXTURE_COMPONENTS = 16
BATCH_FEW_FEATURES, BATCH_MANY_FEATURES, BATCH_IMAGES = 1024, 512, 128
IMAGE_CHANNELS, IMAGE_MIN_LAYERS = 128, 4
ENERGY_RECIPE = {"beta": 0.5, "lr": 3e-3}
MLE_RECIPE = {"beta": 1.0, "lr": 1e-3, "batch_size": 256}
VALIDATION_FRACTION, VALIDATION_MIN_ROWS = 0.1, 200
POSTERIOR_RECIPE = {
    "samples_per_target": 4,
    "batch_size": 256,
    "lr": 1e-3,
    "val_fraction": 0.1,
    "standardisation": "moments",
}


def recommended_settings(
    rows: int, features: int, objective: str = "energy", *, images: bool = False
) -> dict:
    """TrainConfig fields of the recipe for ``rows`` training rows of ``features`` features
    (``images``: for the image model).

    Example:
        >>> settings = recommended_settings(20000, 2)
        >>> settings["batch_size"], settings["standardisation"], settings["val_fraction"]
        (1024, 'moments', 0.1)
        >>> recommended_settings(1400, 64)["standardisation"]
        'quantile'
        >>> recommended_settings(1400, 64, images=True)["batch_size"]
        128
    """
    if images:
        batch = BATCH_IMAGES
    else:
        batch = BATCH_FEW_FEATURES if features <= FEW_FEATURES else BATCH_MANY_FEATURES
    settings = {**ENERGY_RECIPE, "batch_size": batch}
    if objective == "mle":
        settings.update(MLE_RECIPE)
    settings["standardisation"] = (
        "quantile" if features > FEW_FEATURES and objective == "energy" else "moments"
    )
    settings["batch_size"] = max(2, min(settings["batch_size"], rows))
    settings["val_fraction"] = VALIDATION_FRACTION if rows >= VALIDATION_MIN_ROWS else 0.0
    return settings


def recommended_model_options(features: int, model: str = "saef") -> dict:
    """Constructor options for ``MODELS[model]`` ("saef" or "affine") on ``features`` features.

    Example:
        >>> wide = recommended_model_options(64)
        >>> wide["hidden_features"], wide["noise_features"], wide["mixture_components"]
        ((512, 512, 512), 128, 0)
        >>> recommended_model_options(2)["hidden_features"], wide["noise_distribution"]
        ((128, 128, 128), 'normal')
    """
    width = 256 if features < 32 else 512
    if model == "saef":
        return {
            "blocks": 1,
            "hidden_features": (128 if features <= FEW_FEATURES else width,) * 3,
            "residual": True,
            "noise_features": 2 * features,
            "mixture_components": MIXTURE_COMPONENTS if features <= FEW_FEATURES else 0,
            "noise_distribution": "uniform" if features <= FEW_FEATURES else "normal",
        }
    return {"blocks": min(features, 4), "transforms": 4, "hidden_features": (width, width)}


def recommended_image_options(image_shape: tuple[int, int, int]) -> dict:
    """Constructor options of the image model for images (C, H, W): blocks of
    ``default_patch`` pixels, ``IMAGE_CHANNELS`` hidden channels, as many layers as every block
    needs to see all earlier ones (at least ``IMAGE_MIN_LAYERS``), and 2 C p^2 noise channels
    per block. On 8 x 8 digits (study_images.md, 60 s, 3 seeds, with a batch of
    ``BATCH_IMAGES``) 4 layers of 128 channels reached a boosted-tree C2ST of 0.701 +- 0.024
    where the earlier 3 of 64 (batch 512) reached 0.734 +- 0.026 in the same run: 5x the
    weights, and fewer but better steps.

    Example:
        >>> options = recommended_image_options((1, 28, 28))
        >>> options["patch"], options["hidden_features"], options["noise_channels"]
        (4, (128, 128, 128, 128, 128, 128), 32)
        >>> recommended_image_options((1, 8, 8))["hidden_features"]
        (128, 128, 128, 128)
    """
    from energyflow.models.image import default_patch
    from energyflow.nn.masked_conv import layers_for_grid

    channels, height, width = image_shape
    patch = default_patch(height, width)
    layers = layers_for_grid(height // patch, width // patch, minimum=IMAGE_MIN_LAYERS)
    return {
        "patch": patch,
        "hidden_features": (IMAGE_CHANNELS,) * layers,
        "noise_channels": 2 * channels * patch * patch,
    }


def recommended_posterior_options(features: int, model: str = "saef") -> dict:
    """Constructor options of a conditional ``MODELS[model]`` for ``features`` parameters, as
    ``fit_posterior`` builds it by default.

    Example:
        >>> recommended_posterior_options(5)
        {'blocks': 1, 'hidden_features': (128, 128), 'noise_features': 5}
    """
    if model == "saef":
        return {"blocks": 1, "hidden_features": (128, 128), "noise_features": features}
    return {"blocks": min(features, 4), "hidden_features": (256, 256)}
