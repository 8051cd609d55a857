"""``energyflow sample``: draw samples of a trained model into a .npy file, in chunks (constant
memory), with a progress bar; refused up front when the disk cannot hold them. Image models
write images: (N, C, H, W), or (N, R, C, H, W) for R class labels in ``--context``."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from energyflow._io import atomic_npy, read_matrix_npy
from energyflow.cli.runs import load_run
from energyflow.models import GenerativeModel
from energyflow.models.base import SAMPLE_CHUNK_ROWS
from energyflow.training.images import read_labels

__all__ = ["cmd_sample"]


# images drawn per chunk (each chunk runs every block's step): a progress bar that moves
IMAGE_CHUNK_ROWS = 1024


def _one_hot_labels(path: str, classes: int) -> torch.Tensor:
    """One-hot rows (R, classes) of the R integer class labels in the .npy ``path``."""
    labels = read_labels(path, "--context")
    if labels.max() >= classes:
        raise ValueError(
            f"--context {path}: labels must be classes 0..{classes - 1}, got "
            f"{labels.min()}..{labels.max()}"
        )
    return torch.eye(classes)[torch.as_tensor(labels)]


def _read_context(path: Optional[str], model: GenerativeModel) -> torch.Tensor:
    if path is None:
        raise ValueError(
            "this model is conditional: pass --context FILE.npy with one context row per sample"
            + (" (for an image model: one integer class label per row)" if _is_image(model) else "")
        )
    if _is_image(model):
        return _one_hot_labels(path, model.context_features).to(model.loc.device)
    values = read_matrix_npy(path, "--context")
    if values.shape[1] != model.context_features:
        raise ValueError(
            f"--context {path}: expected a non-empty (rows, {model.context_features}) array, "
            f"got shape {values.shape}"
        )
    context = torch.as_tensor(values)
    return context.to(model.loc.device)


def _is_image(model: GenerativeModel) -> bool:
    return getattr(model, "image_shape", None) is not None


def cmd_sample(args: argparse.Namespace) -> int:
    model, _ = load_run(args.run, args.device)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name a .npy file")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: the folder {out.parent} is not writable")
    context = None
    if model.context_features:
        context = _read_context(args.context, model)
        per_row = args.n or 1
        shape = (
            (per_row, len(context), model.features) if args.n else (len(context), model.features)
        )
    else:
        if args.context is not None:
            raise ValueError("--context was given but this model takes no context")
        per_row = args.n or 10000
        shape = (per_row, model.features)
    lead = shape[:-1]
    if _is_image(model):  # (..., D) -> (..., C, H, W)
        shape = lead + tuple(model.image_shape)
    needed = math.prod(shape) * 4 + 4096
    free = shutil.disk_usage(out.parent).free
    if needed > free:
        raise ValueError(
            f"--n {per_row}: the samples need {needed / 2**30:.1f} GiB but {out.parent} has "
            f"{free / 2**30:.1f} GiB free"
        )
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    chunk = IMAGE_CHUNK_ROWS if _is_image(model) else SAMPLE_CHUNK_ROWS
    with atomic_npy(out, shape) as array:
        flat = array.reshape(*lead, model.features)
        if context is None:
            flat = flat.reshape(-1, model.features)
        _fill_with_samples(model, flat, context, args.n is not None, chunk)
    seconds = time.perf_counter() - start
    print(f"{math.prod(lead)} samples in {seconds:.2f} s -> {out} (shape {shape})")
    return 0


def _fill_with_samples(
    model: GenerativeModel,
    array: np.ndarray,
    context: Optional[torch.Tensor],
    per_row: bool,
    chunk: int,
) -> None:
    """Write samples into ``array`` in chunks of ``chunk`` rows (constant memory), with a
    progress bar."""
    if context is None:
        chunks = range(0, len(array), chunk)

        def draw(start: int) -> tuple[slice, torch.Tensor]:
            rows = min(chunk, len(array) - start)
            return slice(start, start + rows), model.sample((rows,))
    elif per_row:  # array (n, rows, D): k draws of every context row at a time
        k = max(1, chunk // len(context))
        chunks = range(0, len(array), k)

        def draw(start: int) -> tuple[slice, torch.Tensor]:
            count = min(k, len(array) - start)
            return slice(start, start + count), model.sample((count,), context)
    else:  # array (rows, D): one sample per context row
        chunks = range(0, len(array), chunk)

        def draw(start: int) -> tuple[slice, torch.Tensor]:
            rows = context[start : start + chunk]
            return slice(start, start + len(rows)), model.sample((), rows)

    with torch.no_grad():
        for start in tqdm(chunks, desc="sampling", unit="chunk", disable=len(chunks) < 4):
            where, values = draw(start)
            array[where] = values.cpu().numpy()
