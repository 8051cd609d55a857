"""Atomic file writes: a temporary file in the same folder, fsync, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import torch


def _atomic_write(path: os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: os.PathLike) -> None:
    """torch.save that never leaves a torn file behind."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: os.PathLike) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def atomic_write_bytes(data: bytes, path: os.PathLike) -> None:
    _atomic_write(path, lambda f: f.write(data))
