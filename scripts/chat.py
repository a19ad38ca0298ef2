"""`llm chat` as a script: python scripts/chat.py --help (llm/commands/chat.py)."""

from llm.commands import run_tool

if __name__ == "__main__":
    run_tool("chat")
