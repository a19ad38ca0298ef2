"""`llm pipeline` as a script: python scripts/pipeline.py --help (llm/commands/pipeline.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("pipeline")
