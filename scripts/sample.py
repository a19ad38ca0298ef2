"""`llm sample` as a script: python scripts/sample.py --help (llm/commands/sample.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("sample")
