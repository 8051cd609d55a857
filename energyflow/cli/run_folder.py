"""Run folders: what a training run writes, how a folder is recognised as one, and the lock that
keeps two runs out of one folder.

A run folder holds ``config.json`` (the run's settings, ``cli.settings.RunSettings``, marked with
their format), ``checkpoint.pt``, ``model.pt``, ``metrics.json``, ``samples.png`` and
``loss_curve.png``, each written atomically,
and ``.lock``, an OS file lock (``fcntl.flock``) held for the life of the run with the pid of the
process that holds it. A second run on the same folder is refused while the lock is held; the lock
goes with the process, so a killed run leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Optional

CONFIG, CHECKPOINT, MODEL, METRICS, PICTURE, LOSS_CURVE, LOCK = (
    "config.json",
    "checkpoint.pt",
    "model.pt",
    "metrics.json",
    "samples.png",
    "loss_curve.png",
    ".lock",
)
RUN_FILES = (CONFIG, CHECKPOINT, MODEL, METRICS, PICTURE, LOSS_CURVE, LOCK)


class RunFolderBusy(ValueError):
    """Another process holds the folder's lock."""


def read_config(folder: Path) -> Optional[dict]:
    """The run settings saved in ``folder``, or None if it holds no energyflow run."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(config, dict) and str(config.get("format", "")).startswith("energyflow-run"):
        return config
    return None


def foreign_entries(folder: Path) -> list[str]:
    """Entries of ``folder`` that no energyflow run writes (empty if the folder is missing)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in RUN_FILES)


def check_not_busy(folder: Path) -> None:
    """Raise RunFolderBusy if another process holds ``folder``'s lock (creates nothing)."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        with RunLock(folder, create=False):
            pass


class RunLock:
    """Exclusive lock on ``folder/.lock`` for a ``with`` block (POSIX ``flock``; elsewhere the
    pid file alone, without mutual exclusion)."""

    def __init__(self, folder: Path, create: bool = True) -> None:
        self.path = folder / LOCK
        self.create = create
        self.handle = None

    def __enter__(self) -> "RunLock":
        if self.create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+" if self.create else "r+")
        try:
            import fcntl
        except ImportError:  # not POSIX: no OS lock
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise RunFolderBusy(
                    f"{self.path.parent} is in use by another energyflow run (pid {holder}); "
                    "wait for it to finish or choose another --out"
                ) from None
        if self.create:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the file releases the flock
            self.handle = None
