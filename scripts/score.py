"""`llm score` as a script: python scripts/score.py --help (llm/commands/score.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("score")
