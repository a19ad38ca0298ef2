"""Every module under llm/ imports on its own, in a fresh interpreter.

A module that only works when something else imported first (a circular import, a name another module sets up)
passes every test that reaches it through that other module; importing it alone finds it. One process imports
the third-party libraries once, then forks a child per module that imports just that module: the child starts
with no `llm` module loaded, as a fresh `python -c "import llm.x"` would, at a tenth of the cost.
Modules are found by globbing llm/, so a new module is covered without editing this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest_helpers import PYTHON, REPO

CHILD = r"""
import json, os, sys, traceback
import numpy, torch, tokenizers, safetensors  # the heavy third-party imports, once
failures = {}
for module in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            os._exit(0)
        except BaseException:
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
            os._exit(1)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status:
        failures[module] = message or f"exit status {status}"
print(json.dumps(failures))
"""


def llm_modules() -> list[str]:
    names = []
    for path in sorted((REPO / "llm").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = llm_modules()


@pytest.fixture(scope="module")
def failures() -> dict[str, str]:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([PYTHON, "-c", CHILD, *MODULES], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_glob_finds_the_packages_and_their_modules():
    assert {"llm", "llm.model", "llm.stages", "llm.stages.dpo", "llm.train.loop", "llm.data.pairs"} <= set(MODULES)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to import each module in a fresh child")
@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(failures, module):
    assert module not in failures, f"import {module} failed: {failures.get(module)}"


def test_a_broken_module_is_caught(tmp_path):
    """The harness itself: a module with a circular import fails alone though it works through its partner."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\nA = 1\n")
    (package / "b.py").write_text("import pkg.a\nB = pkg.a.A\n")
    done = subprocess.run([sys.executable, "-c", CHILD, "pkg.a", "pkg.b"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) >= {"pkg.b"}
