"""What every script shares: argument parsing, config loading, and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable

from llm.errors import LLMError

EXIT_ERROR = 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="a YAML file under configs/")
    parser.add_argument("--resume", action="store_true", help="continue from the run's newest valid checkpoint")
    parser.add_argument("--fresh", action="store_true", help="delete the run folder's old checkpoints and start over")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return parser


INTERRUPTED = "interrupted; the last saved checkpoint is intact (continue with --resume)"


def say_on_stderr(line: str) -> None:
    """One line in one write: print() writes the text and its newline apart, and under torchrun, where every
    process shares one stderr, another process's line then landed between them."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(entry: Callable[[], int | None], interrupted: str = INTERRUPTED) -> None:
    """Run `entry`, turning the project's errors into one line on stderr and an exit status; `interrupted`
    is what Ctrl-C says (a training script's checkpoint line by default)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # nothing is downloaded at run time
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        status = entry()
    except LLMError as exc:
        say_on_stderr(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        say_on_stderr(interrupted)
        sys.exit(EXIT_SIGNAL["SIGINT"])
    from llm.distributed import shutdown  # here: the chat and ranking tools load torch only when they need it

    shutdown(status or 0)  # under torchrun it exits here
    sys.exit(status or 0)


def finish_stage(stage: str, result) -> int:
    """Say how a stage ended (once per job under torchrun) and return the exit status."""
    if os.environ.get("RANK", "0") == "0":
        print(f"[{stage}] {result.ending}; run folder {result.run_dir}")
    return exit_status(result.reason)


def run_stage_script(stage: str, description: str) -> None:
    """A stage's launcher: --config, --resume, --fresh and overrides, then the stage (llm.stages.launch)."""

    def entry() -> int:
        from llm.config import load_stage_config

        args = stage_parser(description).parse_intermixed_args()
        cfg = load_stage_config(stage, args.config, args.overrides)
        from llm.stages.launch import run_stage  # after the settings, so a bad key fails before torch loads

        return finish_stage(stage, run_stage(stage, cfg, resume=args.resume, fresh=args.fresh))

    main(entry)


def invocation() -> str:
    """The command line as the user typed it, for the records a run keeps: `llm pipeline ...` or `python scripts/...`."""
    import shlex

    program = sys.argv[0]
    words = [program, *sys.argv[1:]] if program.startswith("llm ") else ["python", program, *sys.argv[1:]]
    return " ".join(w if w.startswith("llm ") else shlex.quote(w) for w in words)


def exit_status(reason: str) -> int:
    """130/143 when training stopped on a signal, like a shell reports it; else 0."""
    if reason.startswith("interrupted:"):
        return EXIT_SIGNAL.get(reason.split(":", 1)[1], 1)
    return 0
