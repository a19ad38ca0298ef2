"""`llm report` as a script: python scripts/report.py --help (llm/commands/report.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("report")
