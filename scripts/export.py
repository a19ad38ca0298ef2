"""`llm export` as a script: python scripts/export.py --help (llm/commands/export.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("export")
