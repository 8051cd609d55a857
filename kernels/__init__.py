"""Triton kernels of energyflow (installed as ``energyflow.kernels``).

Device code and launch helpers only; they know nothing of models. Set ``TRITON_INTERPRET=1``
before importing triton to run them on CPU tensors (tests); ``INTERPRETED`` says whether it was.
Launchers take contiguous tensors and the accumulation dtype from the caller
(``energyflow.ops.dispatch``).
"""

from .masked_conv_grad_weight import masked_conv_grad_weight
from .masked_conv_window import masked_conv_window
from .masked_linear_forward import masked_linear_forward
from .masked_linear_grad_input import masked_linear_grad_input
from .masked_linear_grad_weight import masked_linear_grad_weight
from .pairwise_row_stats import row_stats
from .tiling import INTERPRETED

__all__ = [
    "INTERPRETED",
    "masked_conv_grad_weight",
    "masked_conv_window",
    "masked_linear_forward",
    "masked_linear_grad_input",
    "masked_linear_grad_weight",
    "row_stats",
]
