"""The `llm` command (llm/commands): generated from the stage table, one line for a command it does not know."""

import subprocess

from conftest_helpers import PYTHON, REPO
from llm import stage_table
from llm.commands import TOOLS, usage


def llm(*args: str) -> subprocess.CompletedProcess:
    # `python -m llm` is the console script `llm`, from the interpreter running the tests wherever its environment is
    return subprocess.run([PYTHON, "-m", "llm", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_help_lists_every_stage_of_the_table_and_every_tool():
    done = llm("--help")
    assert done.returncode == 0
    for name in (*stage_table.NAMES, *TOOLS):
        assert f"\n  {name} " in done.stdout
    assert done.stdout.strip() == usage()


def test_an_unknown_command_is_one_line_with_the_closest_name():
    done = llm("smaple")
    assert done.returncode == 2 and done.stderr.splitlines() == ["error: llm: unknown command 'smaple' (did you mean 'sample'?); "
                                                                 "llm --help lists them"]


def test_a_preset_fixes_its_setting_and_refuses_another_before_anything_is_written(tmp_path):
    done = llm("grpo", "--config", "configs/grpo/tiny.yaml", f"out_dir={tmp_path}", "ppo.advantage=gae")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: configs/grpo/tiny.yaml: key 'ppo.advantage' is grpo in llm grpo (llm ppo takes any); "
                                        "got 'gae'"]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_input_fails_before_the_run_folder_exists(tmp_path):
    done = llm("dpo", "--config", "configs/dpo/tiny.yaml", f"out_dir={tmp_path}", "init_from=")
    assert done.returncode == 2 and "key 'init_from' is required" in done.stderr and len(done.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_every_tool_has_its_module_and_its_script_alias():
    for name in TOOLS:
        assert (REPO / "llm" / "commands" / f"{name}.py").is_file() and (REPO / "scripts" / f"{name}.py").is_file()
