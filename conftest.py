"""Pytest set-up for the tests and the doctests: the Triton kernels run under the interpreter on
the CPU. TRITON_INTERPRET must be set before triton is first imported, hence here, at the root,
before either folder is collected."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
