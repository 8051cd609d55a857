"""Which backends exist here and which one a call runs on: the one place that decides.

Two families of primitives, each with its backend names:

    PAIRWISE_BACKENDS  "auto" | "triton" | "cpp" | "reference"      (ops.pairwise)
    MASKED_BACKENDS    "auto" | "triton" | "blocked" | "reference"  (ops.masked_linear)

``"auto"`` picks Triton for CUDA tensors and the CPU path (C++ extension, or blocked GEMMs)
otherwise. Also defined here, once: the feature count up to which the pairwise kernels take
exact differences (``direct_distances``), the accumulation dtype of every kernel, the ``tl.dot``
precision that follows ``torch.set_float32_matmul_precision``, and whether Triton is interpreted.
"""

from __future__ import annotations

from types import ModuleType
from typing import Optional

import torch

PAIRWISE_BACKENDS = ("auto", "triton", "cpp", "reference")
MASKED_BACKENDS = ("auto", "triton", "blocked", "reference")

# Up to this many features every pairwise kernel (C++ and Triton) takes distances from exact
# differences; above it from centred dot products (GEMM tiles, ``tl.dot``), recomputing close
# pairs exactly. In few dimensions the expansion saves little, wastes a padded dot, and close
# pairs (which it must recompute) are common.
DIRECT_DISTANCE_MAX_DIM = 8

_LOADED: dict[str, tuple[Optional[ModuleType], str]] = {}  # import results, computed once


def direct_distances(dim: int) -> bool:
    """Whether the pairwise kernels take distances in ``dim`` features from exact differences
    (else from dot products): up to ``DIRECT_DISTANCE_MAX_DIM`` features, on every backend.

    Example:
        >>> direct_distances(2), direct_distances(64)
        (True, False)
    """
    return dim <= DIRECT_DISTANCE_MAX_DIM


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Every kernel accumulates in fp32, or in fp64 for fp64 inputs.

    Example:
        >>> accumulation_dtype(torch.bfloat16), accumulation_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision() -> str:
    """``tl.dot`` precision for fp32 inputs: ``"ieee"`` under the default matmul precision
    ``"highest"``, else ``"tf32"``. Read at call time, so compiled graphs follow the setting."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def autocast_inputs(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Under autocast on x's device, all three in the autocast dtype (torch autocasts its own
    ops, such as ``F.linear`` and ``F.conv2d``, but not the custom ones of the masked layers);
    otherwise unchanged."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def _load_cpp() -> tuple[Optional[ModuleType], str]:
    if "cpp" not in _LOADED:
        try:
            from energyflow import _C  # type: ignore[attr-defined]
        except ImportError as err:
            _LOADED["cpp"] = (
                None,
                (
                    f"the C++ extension energyflow._C is not built ({err}); build it with "
                    "`pip install --no-build-isolation -e .` (or `make setup`)"
                ),
            )
        else:
            _LOADED["cpp"] = _C, "available"
    return _LOADED["cpp"]


def _load_triton() -> tuple[Optional[ModuleType], str]:
    if "triton" not in _LOADED:
        try:
            from energyflow import kernels
        except ImportError as err:
            _LOADED["triton"] = (
                None,
                (f"triton is not installed ({err}); `pip install triton` (>= 3.2)"),
            )
        else:
            _LOADED["triton"] = kernels, "available"
    return _LOADED["triton"]


def triton_interpreted() -> bool:
    """True when the Triton kernels run in the interpreter (``TRITON_INTERPRET=1`` was set before
    triton was imported); the flag itself is read once, in ``energyflow.kernels``."""
    kernels = _load_triton()[0]
    return kernels is not None and kernels.INTERPRETED


def _triton_status() -> str:
    kernels, why = _load_triton()
    if kernels is None:
        return why
    if torch.cuda.is_available():
        return "available"
    if kernels.INTERPRETED:
        return "available (TRITON_INTERPRET=1: interpreted on the CPU, for testing only)"
    return (
        "triton is installed but no CUDA device is visible "
        "(set TRITON_INTERPRET=1 to interpret on the CPU)"
    )


def backends() -> dict[str, str]:
    """Each pairwise backend mapped to ``"available"`` or the reason it is not.

    Example:
        >>> import energyflow
        >>> energyflow.backends()["reference"]
        'available'
    """
    return {"reference": "available", "cpp": _load_cpp()[1], "triton": _triton_status()}


def cpp_available() -> bool:
    """Whether the compiled extension loaded (cheap: the import result is kept)."""
    return _load_cpp()[0] is not None


def cpp_module() -> ModuleType:
    """The compiled extension ``energyflow._C``, or a ValueError saying why it is missing."""
    module, why = _load_cpp()
    if module is None:
        raise ValueError(f"backend='cpp' is unavailable: {why}")
    return module


def triton_kernels() -> ModuleType:
    """``energyflow.kernels``, or a ValueError saying why triton is missing."""
    module, why = _load_triton()
    if module is None:
        raise ValueError(f"backend='triton' is unavailable: {why}")
    return module


def check_backend(backend: object, choices: tuple[str, ...]) -> str:
    """``backend`` if it is one of ``choices``, else a ValueError listing them."""
    if backend not in choices:
        raise ValueError(f"backend must be one of {', '.join(map(repr, choices))}; got {backend!r}")
    return backend  # type: ignore[return-value]


def check_available(backend: object, choices: tuple[str, ...]) -> str:
    """``backend`` if it is one of ``choices`` and installed here (the C++ extension built,
    triton importable), else a ValueError saying why: what a module checks at construction
    (whether the tensors' device suits it is known only at the call)."""
    backend = check_backend(backend, choices)
    if backend == "cpp":
        cpp_module()
    elif backend == "triton":
        triton_kernels()
    return backend


def _require_triton(device: torch.device) -> None:
    triton_kernels()
    if device.type == "cpu" and not triton_interpreted():
        raise ValueError(
            "backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before importing "
            "triton, for testing); use the CPU backend or 'auto' on the CPU"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"backend='triton' does not run on {device}")


def _resolve(backend: object, device: torch.device, choices: tuple[str, ...], cpu: str) -> str:
    """Shared rule: validate ``backend``; "auto" is Triton on CUDA (when installed), else ``cpu``;
    a forced backend must be available and able to run on ``device``."""
    backend = check_backend(backend, choices)
    if backend == "auto":
        on_gpu = device.type == "cuda" and _load_triton()[0] is not None
        return "triton" if on_gpu else cpu
    if backend == "triton":
        _require_triton(device)
    if backend == "cpp":
        cpp_module()
        if device.type != "cpu":
            raise ValueError(
                f"backend='cpp' runs on CPU tensors only, got tensors on {device}; "
                "use 'triton' or 'auto'"
            )
    return backend


def resolve_pairwise(backend: object, device: torch.device) -> str:
    """Map a pairwise ``backend`` ("auto" included) to the one that runs on ``device``, or raise:
    "auto" is Triton on CUDA, the C++ extension on the CPU, the reference where neither is.

    Example:
        >>> resolve_pairwise("reference", torch.device("cpu"))
        'reference'
    """
    cpu = "cpp" if device.type == "cpu" and _load_cpp()[0] is not None else "reference"
    return _resolve(backend, device, PAIRWISE_BACKENDS, cpu)


def resolve_masked(backend: object, device: torch.device) -> str:
    """Map a masked-linear ``backend`` ("auto" included) to the one that runs on ``device``:
    "auto" is Triton on CUDA, the blocked GEMMs elsewhere.

    Example:
        >>> resolve_masked("auto", torch.device("cpu"))
        'blocked'
    """
    return _resolve(backend, device, MASKED_BACKENDS, "blocked")
