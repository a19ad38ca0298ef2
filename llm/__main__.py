"""python -m llm: the `llm` command, from the interpreter that runs it (llm/commands)."""

from llm.commands import main

if __name__ == "__main__":
    main()
