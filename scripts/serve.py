"""`llm serve` as a script: python scripts/serve.py --help (llm/commands/serve.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("serve")
