"""The `llm` command, in the manner of `trl sft` and `tune run`: `llm <stage> --config ...` for every stage of the
table (llm/stage_table.py), and the tools that use what the stages trained. scripts/*.py are aliases of these."""

from __future__ import annotations

import difflib
import importlib
import sys

from llm import stage_table
from llm.cli import EXIT_ERROR, INTERRUPTED, run_stage_script
from llm.cli import main as guarded

# the tools, each a module here with entry() -> exit status
TOOLS = {
    "pipeline": "run every stage in order, each from the one before, resuming where it stopped, then the report",
    "sample": "sample text from any stage's checkpoint (--chat for a chat model)",
    "chat": "chat with a fine-tuned model in the terminal",
    "serve": "the chat and ranking web pages and an OpenAI-compatible API",
    "rank": "rank sampled replies in the terminal, or let a rater program fill the rankings file",
    "score": "score replies with a reward model, or measure it (and the raters) against a rankings file",
    "export": "export a checkpoint as a Hugging Face transformers folder",
    "report": "rebuild a pipeline run's report (report.md, report.html, plots)",
    "compare": "several runs' curves on shared axes, and each run's final and best values",
}


def usage() -> str:
    width = max(map(len, [*stage_table.NAMES, *TOOLS]))
    stages = [f"  {s.name:<{width}}  {s.summary}" for s in stage_table.STAGES]
    tools = [f"  {name:<{width}}  {text}" for name, text in TOOLS.items()]
    return "\n".join(["usage: llm <command> [options]   (llm <command> --help for its options)",
                      "", "stages (--config configs/<stage>/...):",
                      *stages, "", "tools:", *tools])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else EXIT_ERROR)
    name, rest = argv[0], argv[1:]
    if name in stage_table.BY_NAME:
        sys.argv = [f"llm {name}", *rest]
        run_stage_script(name, stage_table.spec(name).summary)
    elif name in TOOLS:
        sys.argv = [f"llm {name}", *rest]
        run_tool(name)
    else:
        close = difflib.get_close_matches(name, [*stage_table.NAMES, *TOOLS], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        sys.stderr.write(f"error: llm: unknown command '{name}'{hint}; llm --help lists them\n")
        sys.exit(EXIT_ERROR)


def run_tool(name: str) -> None:
    """A tool's entry() under the shared guard: one-line errors, Ctrl-C said in the tool's own words."""
    module = importlib.import_module(f"llm.commands.{name}")
    guarded(module.entry, getattr(module, "INTERRUPTED", INTERRUPTED))
