"""Several runs side by side: llm compare runs/a runs/b ... [--metrics val_loss,val_accuracy] [--x step|time] [--out compare.png]

Draws the chosen metrics of every run on shared axes in one PNG, each run labelled by the config keys that differ
across the runs (e.g. train.seed=0), and prints each run's final and best value of each metric.
For curves while runs train: python -m tensorboard.main --logdir runs
"""

import argparse
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare runs: one PNG of their curves and a table of final and best values.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run folders (each holds config.yaml and metrics.jsonl)")
    parser.add_argument("--metrics", help="comma-separated metric names as metrics.jsonl and TensorBoard name them "
                                          "(default: the first run's stage's, e.g. val_loss,val_accuracy for a reward model)")
    parser.add_argument("--x", choices=("step", "time"), default="step", help="the x axis: optimizer step or training seconds")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="the PNG to write (default compare.png)")
    return parser.parse_args()


def entry() -> int:
    args = parse_args()
    from llm.report.compare import compare

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    print(compare(args.runs, metrics, args.x, args.out))
    print(args.out)
    return 0
