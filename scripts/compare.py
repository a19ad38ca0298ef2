"""`llm compare` as a script: python scripts/compare.py --help (llm/commands/compare.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("compare")
