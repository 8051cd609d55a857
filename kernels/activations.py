"""Activation epilogues shared by the masked-linear kernels (``ACTIVATION`` is a constexpr name)."""

import triton
import triton.language as tl


@triton.jit
def apply_activation(z, ACTIVATION: tl.constexpr):
    """z (fp32 tile) -> activation(z); gelu is the exact (erf) form, elu has alpha = 1."""
    if ACTIVATION == "relu":
        z = tl.maximum(z, 0.0)
    elif ACTIVATION == "gelu":
        z = 0.5 * z * (1.0 + tl.erf(z * 0.7071067811865476))
    elif ACTIVATION == "silu":
        z = z * tl.sigmoid(z)
    elif ACTIVATION == "tanh":
        z = 2.0 * tl.sigmoid(2.0 * z) - 1.0
    elif ACTIVATION == "elu":
        z = tl.where(z > 0.0, z, tl.exp(tl.minimum(z, 0.0)) - 1.0)
    return z
