"""Build the optional C++ CPU extension ``energyflow._C`` from ``csrc/``.

Portable by default (no ``-march=native``; an AVX2+FMA variant of the kernel is compiled beside
the baseline one and picked at run time); set ``ENERGYFLOW_NATIVE=1`` to tune for this CPU.
Set ``ENERGYFLOW_NO_EXT=1`` to skip the extension (the package then runs its reference and
Triton paths only; ``energyflow.backends()`` says why ``cpp`` is missing).
"""

import os
import sys
from pathlib import Path

from setuptools import setup

ext_modules = []
cmdclass = {}
if os.environ.get("ENERGYFLOW_NO_EXT", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    cxx_flags = [
        "-O3",
        "-std=c++17",
        "-fopenmp",
        "-fno-math-errno",
        "-fno-trapping-math",
        "-ffp-contract=fast",  # a * b + c as one FMA (ISO C++ modes turn it off); no fast-math
    ]
    if os.environ.get("ENERGYFLOW_NATIVE", "0") == "1":
        cxx_flags.append("-march=native")
    if sys.platform == "darwin":  # Apple clang needs libomp; fall back to serial there
        cxx_flags.remove("-fopenmp")
    ext_modules.append(
        CppExtension(
            "energyflow._C",
            sources=[
                "csrc/pairwise_power.cpp",
                "csrc/row_stats_generic.cpp",
                "csrc/row_stats_avx2.cpp",
                "csrc/masked_step.cpp",
                "csrc/grouped_addmm.cpp",
                "csrc/masked_rows.cpp",
            ],
            depends=[str(header) for header in sorted(Path("csrc").glob("*.h"))],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=[] if sys.platform == "darwin" else ["-fopenmp"],
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(ext_modules=ext_modules, cmdclass=cmdclass)
