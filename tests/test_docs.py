"""The README and docs are true: every Python example runs as written (pasted in order into one
session), every command line of the README runs (with tiny budgets), and every local link points
to a file that exists."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from energyflow.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_python_examples_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["samples"].shape == (10000, 64)
    assert namespace["generated"].shape == (128, 64)
    assert namespace["log_density"].shape == (1000,)


def _command_lines() -> list[list[str]]:
    """Every ``energyflow ...`` line of the README's bash blocks, continuations joined and
    comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["energyflow"]:
                lines.append(words[1:])
    return lines


# what makes a README line cheap here: tiny budgets, few rows and draws
SMALLER = {"--steps": "5", "--time-budget": "0.5", "--sims": "300", "--n": "50"}


@pytest.mark.slow_end_to_end
def test_readme_command_lines_run(tmp_path, monkeypatch, small_reports):
    from energyflow.cli import posterior

    # a corner plot per observation (1 s each) is tested in tests/cli/test_posterior_command.py
    monkeypatch.setattr(posterior, "corner_plot", lambda samples, path, **kw: path.touch())
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 3))
    Path("data.csv").write_text(
        "a,b,label\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in table)
    )
    np.save("ctx.npy", rng.normal(size=(4, 1)).astype(np.float32))
    np.save("theta.npy", rng.uniform(-1, 1, size=(300, 2)).astype(np.float32))
    np.save("x.npy", rng.normal(size=(300, 3)).astype(np.float32))
    np.save("xo.npy", rng.normal(size=(2, 3)).astype(np.float32))
    np.save("labels.npy", np.arange(10))
    ran = 0
    for words in _command_lines():
        if "cuda" in words and not torch.cuda.is_available():
            continue
        words = [SMALLER.get(before, word) for before, word in zip([""] + words, words)]
        if words[0] == "train" and "--resume" in words:
            words[words.index("--time-budget") + 1] = "1"  # beyond the first run's 0.5 s
        if words[0] in ("train", "posterior") and not {"--steps", "--time-budget"} & set(words):
            words += ["--steps", "5"]
        if words[0] == "posterior":
            words += ["--c2st-draws", "20"]
        assert main(words) == 0, words
        ran += 1
    assert ran >= 9


def test_local_links_point_to_files():
    for document in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", document.read_text()):
            if "://" in target:
                continue
            assert (document.parent / target).exists(), f"{document.name}: {target}"
