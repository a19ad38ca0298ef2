"""Imports only point down the floors: a module imports its own floor or lower ones, never a higher one.

The floors, lowest first, say what may build on what: names and settings, then the model, the data, checkpoints
and torchrun, the Hugging Face import side, loading, evaluation, the loop, the feedback pages, the stages,
the report, the pipeline, and the commands on top. Every import counts, a function's own too: an import that
runs up the floors ties the modules below into one knot whenever it runs. A module not listed fails the test,
so a new one gets its floor when it is written.
"""

from __future__ import annotations

import ast

from conftest_helpers import REPO

FLOORS: list[tuple[str, ...]] = [
    ("llm", "llm.errors", "llm.run_files", "llm.stage_table", "llm.settings_checks", "llm.tokenizer", "llm.device"),
    ("llm.config",),
    ("llm.model", "llm.losses", "llm.generate", "llm.stream", "llm.chat", "llm.reward_model", "llm.lora"),
    ("llm.data",),
    ("llm.distributed", "llm.train.checkpoint"),
    ("llm.hf", "llm.hf.configs", "llm.hf.read", "llm.hf.tokenizer", "llm.hf.weights", "llm.hf.adapters"),  # the import side of hf/
    ("llm.load",),
    ("llm.eval", "llm.rollouts"),
    ("llm.train",),
    ("llm.feedback",),
    ("llm.stages",),
    ("llm.report", "llm.hf.export"),
    ("llm.pipeline",),
    ("llm.cli", "llm.commands", "llm.__main__"),
]


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted((REPO / "llm").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = ast.parse(path.read_text())
    return found


def floor_of(module: str) -> int | None:
    """The floor of the most specific entry naming the module or a package holding it."""
    best = None
    for number, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (number, name)
    return best[0] if best else None


def imported(tree: ast.Module, known: set[str]) -> set[str]:
    """The project's modules a module imports, anywhere in it (`from llm.x import y` counts llm.x.y when y is a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llm":
            names |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "llm"}
    return names


def test_every_module_has_a_floor():
    assert [m for m in modules() if floor_of(m) is None] == []


def test_no_import_runs_up_the_floors():
    found = modules()
    upward = [f"{module} (floor {floor_of(module)}) imports {name} (floor {floor_of(name)})"
              for module, tree in found.items() for name in sorted(imported(tree, set(found)))
              if name != module and (floor_of(name) or 0) > (floor_of(module) or 0)]
    assert upward == []


def test_an_upward_import_is_caught():
    tree = ast.parse("def f():\n    from llm.stages.launch import run_stage\n")
    assert floor_of("llm.stages.launch") > floor_of("llm.model")
    assert imported(tree, {"llm.stages.launch"}) == {"llm.stages.launch"}
