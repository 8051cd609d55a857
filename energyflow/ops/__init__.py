"""The autograd layer: one module per primitive, each a ``torch.library`` custom op family with
a ``{backend: implementation}`` table, and ``dispatch`` deciding which backend runs.

- ``dispatch``: backend names, availability, ``"auto"`` resolution, accumulation dtype.
- ``pairwise``: fused pairwise power sums (C++ / Triton) and their gradients;
  ``pairwise_reference`` is the pure-PyTorch oracle.
- ``masked_linear``: block-masked linear maps (blocked GEMMs / Triton / reference);
  ``mask_plan`` holds a layer's connectivity.

Users call ``energyflow.functional`` and ``energyflow.nn``; this layer takes validated tensors.
"""
