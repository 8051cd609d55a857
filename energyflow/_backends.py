"""Which fused backends exist here, and which one a call runs on."""
from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

import torch

BACKENDS = ("auto", "triton", "cpp", "reference")


_LOADED: dict[str, tuple[Optional[ModuleType], str]] = {}  # import results, computed once


def _cpp_module() -> tuple[Optional[ModuleType], str]:
    if "cpp" in _LOADED:
        return _LOADED["cpp"]
    try:
        from energyflow import _C  # type: ignore[attr-defined]
    except ImportError as err:
        _LOADED["cpp"] = None, (
            f"the C++ extension energyflow._C is not built ({err}); build it with "
            "`pip install --no-build-isolation -e .` (or `make setup`)"
        )
    else:
        _LOADED["cpp"] = _C, "available"
    return _LOADED["cpp"]


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_module() -> tuple[Optional[ModuleType], str]:
    if "triton" in _LOADED:
        return _LOADED["triton"]
    try:
        import triton  # noqa: F401

        from energyflow import kernels
    except ImportError as err:
        _LOADED["triton"] = None, f"triton is not installed ({err}); `pip install triton` (>= 3.2)"
    else:
        _LOADED["triton"] = kernels, "available"
    return _LOADED["triton"]


def _triton_status() -> str:
    module, why = _triton_module()
    if module is None:
        return why
    if torch.cuda.is_available():
        return "available"
    if triton_interpreted():
        return "available (TRITON_INTERPRET=1: interpreted on the CPU, for testing only)"
    return "triton is installed but no CUDA device is visible (set TRITON_INTERPRET=1 to interpret on the CPU)"


def backends() -> dict[str, str]:
    """Each fused backend mapped to ``"available"`` or the reason it is not.

    >>> energyflow.backends()
    {'reference': 'available', 'cpp': 'available', 'triton': 'triton is installed but no CUDA ...'}
    """
    return {"reference": "available", "cpp": _cpp_module()[1], "triton": _triton_status()}


def cpp_module() -> ModuleType:
    module, why = _cpp_module()
    if module is None:
        raise ValueError(f"backend='cpp' is unavailable: {why}")
    return module


def triton_kernels_available() -> bool:
    return _triton_module()[0] is not None


def dot_precision() -> str:
    """tl.dot precision for fp32 inputs, following torch.set_float32_matmul_precision."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def triton_kernels() -> ModuleType:
    module, why = _triton_module()
    if module is None:
        raise ValueError(f"backend='triton' is unavailable: {why}")
    return module


def resolve(backend: str, device: torch.device) -> str:
    """Map ``backend`` ("auto" included) to the one that runs on ``device``, or raise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if device.type == "cuda":
            return "triton" if _triton_module()[0] is not None else "reference"
        if device.type == "cpu" and _cpp_module()[0] is not None:
            return "cpp"
        return "reference"
    if backend == "cpp":
        cpp_module()
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' runs on CPU tensors only, got tensors on {device}; use 'triton' or 'auto'")
    if backend == "triton":
        triton_kernels()
        if device.type == "cpu" and not triton_interpreted():
            raise ValueError(
                "backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before importing "
                "triton, for testing); use backend='cpp' or 'auto' on the CPU"
            )
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='triton' does not run on {device}")
    return backend
