"""Atomic file writes: a temporary file in the same folder, fsync, then rename. Files get the
mode the user's umask gives any new file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Union

import numpy as np
import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` (with the umask's mode; mkstemp makes it 0600) that
    replaces ``path`` when the block succeeds and is removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _atomic_write(path: os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    with _replacing(Path(path)) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_save(obj: Any, path: os.PathLike) -> None:
    """torch.save that never leaves a torn file behind."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: os.PathLike) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def atomic_write_bytes(data: bytes, path: os.PathLike) -> None:
    _atomic_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def atomic_npy(
    path: os.PathLike, shape: tuple[int, ...], dtype: type = np.float32
) -> Iterator[np.ndarray]:
    """A writable memory-mapped ``.npy`` array of ``shape`` that appears at ``path`` only when the
    block finishes (filled in chunks, so memory stays constant whatever the size)."""
    with _replacing(Path(path)) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        array.flush()
        del array


def load_npy(path: Union[str, os.PathLike], flag: str) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (no pickles); a ValueError naming ``flag`` and
    the file when it is missing or unreadable."""
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{flag} {path}: not a readable numeric .npy ({err})") from None


def read_matrix_npy(path: Union[str, os.PathLike], flag: str) -> np.ndarray:
    """A non-empty real (rows, columns) array from a ``.npy`` file (a vector is one column),
    as float32 and finite; a ValueError naming ``flag`` and the file otherwise."""
    values = load_npy(path, flag)
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"{flag} {path}: expected real numbers, got dtype {values.dtype}")
    values = values[:, None] if values.ndim == 1 else values
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(
            f"{flag} {path}: expected a non-empty (rows, columns) array, got shape {values.shape}"
        )
    values = values.astype(np.float32)
    bad = ~np.isfinite(values).all(1)
    if bad.any():
        raise ValueError(f"{flag} {path}: row {int(np.argmax(bad))} (0-based) holds NaN or inf")
    return values
