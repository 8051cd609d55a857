"""A finished run, as the commands that read one (sample, eval) load it."""

from __future__ import annotations

from pathlib import Path

from energyflow.cli.run_folder import CONFIG, MODEL, read_config
from energyflow.cli.settings import RunSettings
from energyflow.models import GenerativeModel, load_model
from energyflow.training.device import resolve_device

__all__ = ["load_run"]


def load_run(run_dir: str, device: str) -> tuple[GenerativeModel, RunSettings]:
    """The model and settings of the finished run in ``run_dir``, the model on ``device``."""
    path = Path(run_dir)
    where = resolve_device(device)
    if not (path / MODEL).exists():
        raise ValueError(f"--run {path}: no model.pt (train first, or wait for the run to finish)")
    try:
        model = load_model(path / MODEL, map_location=where)
    except Exception as err:  # noqa: BLE001 - torch.load raises many kinds on a bad file
        raise ValueError(
            f"--run {path}: {MODEL} is not a readable energyflow model "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    saved = read_config(path)
    if saved is None:
        raise ValueError(f"--run {path}: no readable {CONFIG}")
    return model, RunSettings.from_json(saved, f"--run {path / CONFIG}")
