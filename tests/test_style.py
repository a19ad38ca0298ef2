"""The lint every contributor's code passes: ruff with the rules in pyproject.toml ([tool.ruff])."""

import importlib.util
import subprocess

import pytest

from conftest_helpers import PYTHON, REPO


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed (pip install -e '.[dev]')")
def test_the_code_passes_ruff():
    done = subprocess.run([PYTHON, "-m", "ruff", "check", "--no-cache", "llm", "scripts", "tests", "benchmarks"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
