"""Benchmarks: python scripts/bench.py --out bench/results.json [--only NAME ...] [--repeat 3]

Each case runs in its own process (so its peak memory is its own), once per round for --repeat
rounds; the median round is reported with every round's figure. The results land in one JSON file
with the machine they were measured on. `--case NAME` runs one case and prints its JSON.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks live beside llm/, not in the installed package
from benchmarks.suite import run_all, run_case  # noqa: E402
from llm.cli import main  # noqa: E402


def entry() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results.json")
    parser.add_argument("--only", action="append", default=[], help="run the cases whose name contains this")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every case; the median round is reported")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return 0
    run_all(Path(args.out), args.only, args.repeat)
    return 0


if __name__ == "__main__":
    main(entry)
