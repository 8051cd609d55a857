"""Helpers every benchmark shares: the machine description, peak-memory and timing loops.

Benchmarks run from this folder (``cd benchmarks && python bench_energy.py``), so they import
this module as ``_common``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

import energyflow as ef

RESULTS = Path(__file__).resolve().parent / "results"


def machine_description(device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "backends": ef.backends(),
        "date": time.strftime("%Y-%m-%d"),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def write_results(stem: str, payload: dict, table: str) -> None:
    """Write results/<stem>.json (``payload``) and results/<stem>.md (``table``); print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)


def _return_freed_memory() -> None:
    """Give freed heap pages back to the OS, so RSS counts only live memory (glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Extra peak memory of a block: CUDA allocator stats, or the process's VmHWM on Linux."""

    def __init__(self, device: str) -> None:
        self.device = device

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field))
        return int(line.split()[1]) * 1024

    def __enter__(self) -> "PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            _return_freed_memory()
            with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
                f.write("5")
            self.start = self._status("VmRSS:")
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.extra = torch.cuda.max_memory_allocated() - self.start
        else:
            self.extra = self._status("VmHWM:") - self.start


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(
    calls: dict[str, Callable[[], None]], device: str, repeats: int
) -> dict[str, tuple[float, int]]:
    """(median seconds, extra peak bytes) of each call.

    Each call runs once first (a warm-up, with its extra peak memory measured); then the calls
    are timed in turn (A, B, A, B, ...) ``repeats`` times, so that drifts of a shared machine hit
    all of them alike and their ratios stay meaningful. With ``repeats=0`` (problems where one
    call takes many seconds) the warm-up call is the timing.
    """
    peaks, first = {}, {}
    for name, fn in calls.items():
        _sync(device)
        start = time.perf_counter()
        with PeakMemory(device) as peak:
            fn()
            _sync(device)
        first[name] = time.perf_counter() - start
        peaks[name] = peak.extra
    if repeats == 0:
        return {name: (first[name], peaks[name]) for name in calls}
    medians = interleaved_medians(calls, device, repeats, warm_up=False)
    return {name: (medians[name], peaks[name]) for name in calls}


def interleaved_medians(
    calls: dict[str, Callable[[], None]], device: str, repeats: int, warm_up: bool = True
) -> dict[str, float]:
    """Median seconds of each call, timed in turn (A, B, A, B, ...) after one warm-up each, so
    that drifts of a shared machine hit all of them alike and their ratios stay meaningful."""
    if warm_up:
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
