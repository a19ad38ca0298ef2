"""Run the whole pipeline: llm pipeline --config configs/pipeline/tiny.yaml [--from sft] [key=value ...]

Stages run in runs/<name>/<stage>; finished stages are skipped, interrupted ones resume, changed ones
(and everything after them) run again. A report is written to runs/<name>/report.md and report.html.
"""

import argparse

from llm.cli import exit_status, invocation


def entry() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file under configs/pipeline/")
    parser.add_argument("--from", dest="start_from", metavar="STAGE", help="run this stage and every later one again")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="pipeline config overrides")
    args = parser.parse_intermixed_args()
    from llm.pipeline import run_pipeline

    command = invocation()
    reason = run_pipeline(args.config, args.overrides, args.start_from, command)
    return exit_status(reason)
