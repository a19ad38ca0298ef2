"""Rebuild a pipeline run's report from its folder alone: report.md, a self-contained report.html, plots/*.png.

llm report runs/tiny
llm report runs/tiny --no-answers   # reuse answers.json instead of loading each stage's model
"""

import argparse
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write runs/<name>/report.md and report.html from a pipeline run folder.")
    parser.add_argument("run_dir", help="the pipeline's run folder (holds pipeline.json and one folder per stage)")
    parser.add_argument("--no-answers", action="store_true",
                        help="do not load models to answer the report prompts; show the answers cached in answers.json")
    parser.add_argument("--results", type=Path, metavar="FILE",
                        help="also write the report as a document to keep (e.g. docs/results.md), its figures copied beside it")
    return parser.parse_args()


def entry() -> int:
    args = parse_args()
    from llm.report.build import build_report

    report = build_report(Path(args.run_dir), answers=not args.no_answers)
    print(f"{report}\n{report.with_suffix('.html')}")
    if args.results:
        from llm.report.build import write_results

        print(write_results(Path(args.run_dir), args.results))
    return 0
