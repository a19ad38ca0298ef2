"""The suite runs from any environment: every program a test starts comes from the interpreter running the tests.

A test that starts `<repo>/.venv/bin/torchrun` or a bare `torchrun` from PATH fails when the package is installed
in a user's own environment and pytest is run without activating it (`FileNotFoundError: 'torchrun'`).
"""

import re

from conftest_helpers import REPO

ENVIRONMENT_BOUND = re.compile(r"""\.venv/bin|["']torchrun["']|\[\s*["'](python3?|pytest|llm)["']""")


def test_no_test_names_an_environment_or_a_program_from_path():
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in sorted((REPO / "tests").rglob("*.py")) if path.name != "test_environment.py"
             for n, line in enumerate(path.read_text().splitlines(), start=1) if ENVIRONMENT_BOUND.search(line)]
    assert found == []


def test_the_pattern_finds_what_it_is_for():
    for line in ('subprocess.run([".venv/bin/python", "x"])', 'cmd = ["torchrun", "--nproc_per_node=2"]', 'run(["python", "-m", "x"])'):
        assert ENVIRONMENT_BOUND.search(line), line
    assert not ENVIRONMENT_BOUND.search('subprocess.run([PYTHON, "-m", "torch.distributed.run"])')
    assert not ENVIRONMENT_BOUND.search('subprocess.run([PYTHON, "-m", "llm", "--help"])')
