"""`llm rank` as a script: python scripts/rank.py --help (llm/commands/rank.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("rank")
