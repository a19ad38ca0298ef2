"""Reply styles and the built-in rater: what the demonstrations leave open, and a person's preference among it.

Instruction-tuned models imitate demonstrations written by many people in many styles; people's
rankings then select among those styles. The built-in SFT data answers each task in one of three
styles, all correct:

    plain       the answer                                    "red"
    filler      a cheerful opener, then the answer            "Sure! red"
    disclaimer  the answer, then an unneeded caveat           "red (please double-check this)"

and the built-in rater stands in for the person who ranks sampled replies. Its rubric (also in
docs/design.md and the report): a correct, finished reply before any other; among those, the
preferred style before the others; then by style again among the wrong ones. With `prefer=""` it
ranks by correctness only, which is the control that shows a gain comes from the preference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from llm.settings_checks import STYLES

# short, so a tiny model with a 32-token reply budget learns them whole
OPENERS = ("Sure! ", "Of course! ")
CAVEATS = (" (please double-check this)", " (I may be wrong)")


def styled(answer: str, style: str, variant: int = 0) -> str:
    """`answer` written in `style`; `variant` picks among the phrasings of that style."""
    if style == "filler":
        return OPENERS[variant % len(OPENERS)] + answer
    if style == "disclaimer":
        return answer + CAVEATS[variant % len(CAVEATS)]
    if style == "plain":
        return answer
    raise ValueError(f"unknown reply style {style!r}; styles are {', '.join(STYLES)}")


def parse_style(reply: str) -> tuple[str, str]:
    """(style, the answer inside it). A reply with both an opener and a caveat is "filler+disclaimer"."""
    text = reply.strip()
    opener = next((o for o in OPENERS if text.startswith(o.strip()) and text != o.strip()), None)
    caveat = next((c for c in CAVEATS if text.endswith(c.strip()) and text != c.strip()), None)
    if opener:
        text = text[len(opener.strip()):].lstrip()
    if caveat:
        text = text[: -len(caveat.strip())].rstrip()
    kinds = [name for name, found in (("filler", opener), ("disclaimer", caveat)) if found]
    return "+".join(kinds) or "plain", text


def pick_style(prompt: str, weights: Sequence[float], seed: int = 0) -> tuple[str, int]:
    """A style for a demonstration, drawn from `weights` (over STYLES) by a hash of the prompt: stable
    across runs and sizes, and independent of the task's split."""
    digest = int(hashlib.sha256(f"{seed}:{prompt}".encode()).hexdigest(), 16)
    total = sum(weights)
    point = (digest % 10**9) / 10**9 * total
    for style, weight in zip(STYLES, weights):
        if point < weight:
            return style, (digest >> 40) % 2
        point -= weight
    return STYLES[-1], (digest >> 40) % 2


@dataclass(frozen=True)
class Verdict:
    correct: bool  # the answer inside the style is the task's answer, and the reply ended by itself
    style: str
    best: bool  # correct and in the preferred style: what the rater ranks best-possible


def judge(answer: str, reply: str, finished: bool, prefer: str) -> Verdict:
    """The rater's view of one reply to a task whose correct answer is `answer`."""
    style, inner = parse_style(reply)
    correct = finished and " ".join(inner.split()) == " ".join(answer.split())
    return Verdict(correct, style, correct and (not prefer or style == prefer))


def rank_key(verdict: Verdict, prefer: str) -> tuple[int, int]:
    """Larger is better: correctness first, then the preferred style."""
    return int(verdict.correct), int(bool(prefer) and verdict.style == prefer)
