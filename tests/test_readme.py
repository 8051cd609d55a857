"""The README's Python examples run as written, pasted in order into one session."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["samples"].shape == (10000, 64)
    assert namespace["generated"].shape == (128, 64)
    assert namespace["log_density"].shape == (1000,)
