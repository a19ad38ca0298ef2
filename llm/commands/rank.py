"""Rank a checkpoint's replies in the terminal, or let a rater program rank them: the human-feedback step.

llm rank --checkpoint runs/tiny/sft --rank feedback/tiny.jsonl                   # you rank
llm rank --checkpoint runs/tiny/sft --rank feedback/tiny.jsonl --rater plain --target 1500
llm rank --checkpoint runs/tiny/sft --rank feedback/tiny.jsonl --name ana --raters-per-prompt 2

Each prompt shows K numbered replies; type their order best first, like `2 1 4 3`, with `=` for a tie
(`2=1 4 3`). Also: s skips, b says all are bad, u undoes the last ranking, p TEXT ranks replies to your
own prompt, q quits. Every answer is appended to the file at once; a rerun continues where it stopped.
The web page (llm serve) writes the same file. With --raters-per-prompt N each prompt goes to N
distinct raters (by --name, or the rater program's), never twice to one, with the replies the first ranked.
"""

import argparse
import re
import sys

from llm.feedback.options import add_ranking_flags, check_ranking_flags

# escape codes, other control characters and bidirectional controls in model output would act on the terminal
UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HELP = "order best first (e.g. 2 1 4 3; 2=1 ties), s skip, b all bad, u undo, p TEXT your own prompt, q quit"


INTERRUPTED = "stopped; every answer given is in the rankings file"  # what Ctrl-C says


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ranking_flags(parser)
    parser.add_argument("--rank", required=True, help="the rankings file (JSON Lines) to append to")
    parser.add_argument("--rater", help="a rater program instead of you: checker, plain, filler or disclaimer (llm/feedback/raters.py)")
    parser.add_argument("--noise", type=float, default=0.0, help="with --rater: the share of rankings it gives reversed")
    parser.add_argument("--name", default="person", help="your name, written with every answer you give")
    return parser.parse_args()


def parse_order(text: str, k: int) -> list[list[int]]:
    """`2=1 4 3` -> [[1, 0], [3], [2]] (0-based groups, best first); ValueError with the reason."""
    try:
        groups = [[int(n) - 1 for n in token.split("=")] for token in text.split()]
    except ValueError:
        raise ValueError(f"not an order of numbers: {text!r}") from None
    flat = sorted(i for group in groups for i in group)
    if flat != list(range(k)):
        raise ValueError(f"name each of the {k} replies (1-{k}) exactly once")
    return groups


def printable(text: str) -> str:
    """Text as the terminal may show it: each control character as a visible <U+XXXX>."""
    return UNPRINTABLE.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def show(item, progress: dict) -> None:
    print(f"\n[{progress['ranked']} of {progress['target']} ranked] {printable(item.prompt[-1]['content'])}")
    for number, reply in enumerate(item.replies, 1):
        print(f"  {number}. {printable(reply.text)}" + ("" if reply.finished else "   (cut: did not finish)"))


def answer(session, item, line: str) -> bool:
    """Act on one line the person typed; False when they quit."""
    command, _, rest = line.partition(" ")
    if command == "q":
        return False
    if command == "s":
        session.give(item.id, [], "skipped")
    elif command == "b":
        session.give(item.id, [], "all_bad")
    elif command == "u":
        print("(undone)" if session.undo() else "(nothing to undo in this run)")
    elif command == "p":
        session.type_prompt(rest)
    else:
        session.give(item.id, parse_order(line, len(item.replies)))
    return True


def rank_by_hand(session) -> int:
    from llm.feedback.rankings import AlreadyRanked, WriteFailed

    print(HELP, file=sys.stderr)
    while True:
        item = session.current()
        if item is None:
            print("no prompts left to rank")
            return 0
        show(item, session.progress())
        try:
            line = input("> ").strip()
        except EOFError:
            print()
            return 0
        try:
            if line and not answer(session, item, line):
                return 0
        except ValueError as err:
            print(f"({err}; {HELP})")
        except (AlreadyRanked, WriteFailed) as err:
            print(f"({err})")


def entry() -> int:
    args = parse_args()
    check_ranking_flags(args)
    if args.rater:
        from llm.feedback.raters import check_rater

        check_rater(args.rater, args.noise)
    from llm.feedback.options import open_model, prompt_items
    from llm.feedback.rankings import RankingFile
    from llm.feedback.session import RankingSession

    store = RankingFile(args.rank)  # an unwritable file fails now, before the model loads
    opened = open_model(args)
    if args.rater:
        from llm.feedback.simulate import simulate

        added = simulate(store, prompt_items(args, opened.loaded), opened.sampler, args.rater, args.target, args.noise, args.seed,
                         args.checkpoint, opened.sampling, on_progress=lambda n: print(f"\r{n} ranked", end="", file=sys.stderr),
                         raters_per_prompt=args.raters_per_prompt)
        print(f"\n{args.rank}: {added} rankings added by rater {args.rater}; {len(store.in_force())} in the file")
        return 0
    session = RankingSession(store, prompt_items(args, opened.loaded), opened.sampler,
                             args.target, args.checkpoint, opened.sampling, args.seed,
                             args.name, raters_per_prompt=args.raters_per_prompt)
    return rank_by_hand(session)
