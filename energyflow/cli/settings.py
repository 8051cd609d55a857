"""A run's settings, one object (``RunSettings``): the data, the model and the training
(``TrainConfig``), each a dataclass whose fields declare their flag, help and rule once
(``training.config.setting``). The ``energyflow train`` flags are built from them, config.json
holds them, and ``resolve`` fills them in one place, in one order: defaults, then the recipe for
the data, then the saved run (``--resume``), then the flags given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Optional

from energyflow.models import MODELS, GenerativeModel, build_model
from energyflow.models.generator import NOISE_DISTRIBUTIONS
from energyflow.training.config import (
    AT_LEAST_1,
    NON_NEGATIVE,
    Rule,
    TrainConfig,
    check_values,
    default_estimator,
    setting,
    with_recipe,
)
from energyflow.training.data import BUILTIN, Dataset, load_dataset
from energyflow.training.recipe import recommended_image_options, recommended_model_options

__all__ = [
    "RESUMABLE",
    "DataOptions",
    "ModelOptions",
    "RunSettings",
    "dataset_of",
    "model_of",
    "resolve",
]

# The run format config.json declares; a run folder of another format is not resumed.
FORMAT = "energyflow-run/2"


@dataclass
class DataOptions:
    """Where the rows come from."""

    data: Optional[str] = setting(
        None,
        f"built-in ({', '.join(BUILTIN)}), a .npy/.csv table, or images: a folder of PNG/JPEG "
        "files (class subfolders give labels), an (N, C, H, W) .npy, an MNIST IDX image file",
    )
    n_train: int = setting(
        20000, "rows drawn for the 2-D toys", rule=Rule(lambda v: v >= 10, "an integer >= 10")
    )
    context_cols: Optional[list[str]] = setting(
        None, "columns (index or CSV name) used as context (conditional model)"
    )
    header: Optional[bool] = setting(None, "CSV: the first row is a header (default: detected)")
    image_size: Optional[int] = setting(
        None, "images: resize a folder's images to S x S pixels", rule=AT_LEAST_1
    )
    labels: Optional[str] = setting(
        None, "images: .npy (or IDX) of one integer class per image; trains class-conditional"
    )
    class_conditional: Optional[bool] = setting(
        None, "images: condition on the class (digits-images' own labels, --labels, subfolders)"
    )


@dataclass
class ModelOptions:
    """The model; fields left None take the recipe for the data (``training.recipe``)."""

    model: Optional[str] = setting(
        None,
        "saef: generator; affine: flow; image: block generator for images (default: image for "
        "image data, else saef)",
        choices=tuple(sorted(MODELS)),
    )
    blocks: Optional[int] = setting(
        None, "K blocks, 0: one per feature (recipe: saef 1, affine min(D, 4))", rule=NON_NEGATIVE
    )
    hidden: Optional[list[int]] = setting(
        None,
        "hidden widths (recipe: saef 3 x 128 for D <= 8, 3 x 256 for D < 32, else 3 x 512, "
        "residual; affine 2 x 256, 2 x 512 from D = 32); image: one equal width per layer "
        "(recipe: 128, as many layers as the block grid needs, at least 4)",
        rule=AT_LEAST_1,
    )
    residual: Optional[bool] = setting(None, "saef: residual hidden layers (recipe: on)")
    transforms: int = setting(4, "affine: stacked transforms", rule=AT_LEAST_1)
    noise_features: Optional[int] = setting(
        None, "saef: continuous noise units (recipe: 2 x D)", rule=AT_LEAST_1
    )
    mixture_components: Optional[int] = setting(
        None,
        "saef: discrete latent components, 0: none (recipe: 16 for D <= 8, else 0)",
        rule=NON_NEGATIVE,
    )
    noise_distribution: Optional[str] = setting(
        None,
        "saef: the continuous noise as the network sees it; uniform is bounded, so the modes "
        "get no stretched tails (recipe: uniform for D <= 8, else normal)",
        choices=NOISE_DISTRIBUTIONS,
    )
    patch: Optional[int] = setting(
        None, "image: block side p in pixels (recipe: 4 from 24 pixels, else 2)", rule=AT_LEAST_1
    )
    noise_channels: Optional[int] = setting(
        None, "image: noise channels per block (recipe: 2 C p^2)", rule=AT_LEAST_1
    )


GROUPS = {"data": DataOptions, "model": ModelOptions, "train": TrainConfig}
# train settings a resumed run may change (everything else must match the saved run)
RESUMABLE = {
    ("train", "steps"),
    ("train", "time_budget"),
    ("train", "device"),
    ("train", "compile"),
}


@dataclass
class RunSettings:
    data: DataOptions
    model: ModelOptions
    train: TrainConfig

    def to_json(self) -> dict:
        return {"format": FORMAT, **{group: asdict(getattr(self, group)) for group in GROUPS}}

    @classmethod
    def from_json(cls, saved: dict, where: str) -> "RunSettings":
        if saved.get("format") != FORMAT:
            raise ValueError(
                f"{where} was written by another version of energyflow ({saved.get('format')!r}, "
                f"this one reads {FORMAT!r}); start a new run"
            )
        return cls(**{group: kind(**saved[group]) for group, kind in GROUPS.items()})


# model options that only the image model takes, and those that only the flat models take
IMAGE_OPTIONS = ("patch", "noise_channels")
FLAT_OPTIONS = ("blocks", "residual", "noise_features", "mixture_components", "noise_distribution")


def _model_with_recipe(options: ModelOptions, dataset: Dataset) -> ModelOptions:
    name = options.model or ("image" if dataset.images else "saef")
    if name == "image" and not dataset.images:
        raise ValueError(
            "--model image needs image data (digits-images, an image folder, an (N, C, H, W) "
            ".npy or an MNIST IDX file)"
        )
    foreign = FLAT_OPTIONS if name == "image" else IMAGE_OPTIONS
    given = [f"--{key.replace('_', '-')}" for key in foreign if getattr(options, key) is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} do(es) not apply to --model {name}"
            + (
                " (its blocks are p x p patches: --patch)"
                if name == "image"
                else " (they set the image model: --model image)"
            )
        )
    if name == "image":
        recipe = recommended_image_options(dataset.image_shape)
        filled = {"patch": recipe["patch"], "noise_channels": recipe["noise_channels"]}
    else:
        recipe = recommended_model_options(dataset.features, name)
        filled = {
            "blocks": recipe["blocks"],
            "residual": recipe.get("residual", False),
            "noise_features": recipe.get("noise_features", dataset.features),
            "mixture_components": recipe.get("mixture_components", 0),
            "noise_distribution": recipe.get("noise_distribution", "normal"),
        }
    filled.update(model=name, hidden=list(recipe["hidden_features"]))
    options = replace(options, **{k: v for k, v in filled.items() if getattr(options, k) is None})
    if name == "image" and len(set(options.hidden)) != 1:
        raise ValueError(
            f"--hidden {' '.join(map(str, options.hidden))}: the image model's layers are "
            "residual, of one width; give one width per layer, all equal (e.g. 64 64 64)"
        )
    return options


def dataset_of(options: DataOptions, seed: int) -> Dataset:
    """The data a run's settings name (split by its seed)."""
    return load_dataset(
        options.data,
        n_train=options.n_train,
        seed=seed,
        context_cols=options.context_cols or (),
        header=options.header,
        image_size=options.image_size,
        labels=options.labels,
        class_conditional=options.class_conditional,
    )


def resolve(
    given: dict[str, dict], saved: Optional[RunSettings], dataset_for
) -> tuple[RunSettings, Dataset]:
    """The settings of a run and its data: ``given`` (group -> the flags given) over the
    ``saved`` run's settings when resuming, else over the defaults filled by the recipe for the
    data (``dataset_for(settings)`` loads it). A resumed run takes only the RESUMABLE flags;
    others that contradict it raise a ValueError naming them."""
    if saved is not None:
        contradicting = [
            f"--{name.replace('_', '-')} {value!r} (saved: {kept!r})"
            for group, values in given.items()
            for name, value in values.items()
            if (group, name) not in RESUMABLE
            and value != (kept := getattr(getattr(saved, group), name))
        ]
        if contradicting:
            raise ValueError(
                "--resume continues the saved run; these flags contradict it: "
                + "; ".join(contradicting)
                + ". Drop them (--steps and --time-budget may change, to extend the run)"
            )
        resumed = given.get("train", {})
        settings = replace(saved, train=replace(saved.train, **resumed))
        return settings, dataset_for(settings)
    settings = RunSettings(
        **{group: kind(**given.get(group, {})) for group, kind in GROUPS.items()}
    )
    for group in GROUPS:
        check_values(getattr(settings, group))
    dataset = dataset_for(settings)
    if settings.model.blocks is not None and settings.model.blocks > dataset.features:
        raise ValueError(
            f"--blocks {settings.model.blocks} exceeds the {dataset.features} features of the "
            "data (0 means one block per feature)"
        )
    model = _model_with_recipe(settings.model, dataset)
    train = with_recipe(
        settings.train, len(dataset.train), dataset.features, images=model.model == "image"
    )
    if train.estimator is None and train.objective != "mle":
        conditional = dataset.context_features > 0
        train = replace(train, estimator=default_estimator(conditional, MODELS[model.model]))
    return replace(settings, model=model, train=train), dataset


def model_of(options: ModelOptions, dataset: Dataset) -> GenerativeModel:
    """The model ``options`` describe (resolved), sized for ``dataset``."""
    return build_model(
        options.model,
        dataset.features,
        blocks=options.blocks or dataset.features if options.blocks is not None else None,
        context_features=dataset.context_features,
        hidden_features=tuple(options.hidden),
        transforms=options.transforms,
        noise_features=options.noise_features,
        residual=options.residual,
        mixture_components=options.mixture_components,
        noise_distribution=options.noise_distribution,
        image_shape=dataset.image_shape,
        patch=options.patch,
        noise_channels=options.noise_channels,
        hidden_channels=options.hidden[0],
        layers=len(options.hidden),
    )
