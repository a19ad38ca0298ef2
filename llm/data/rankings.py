"""Rankings of K replies to one prompt, as people (or a rater program) give them: the file's format and its pairs.

The file is JSON Lines, one object per ranking, appended the moment it is given (llm/feedback/rankings.py
writes it):

    {"id": "3f9c...", "prompt": [{"role": "user", "content": "Say cat 2 times."}],
     "replies": [{"text": "cat cat", "finished": true}, {"text": "Sure! cat cat", "finished": true}, ...],
     "ranking": [[0], [1, 3], [2]], "status": "ranked", "rater": "person",
     "checkpoint": "runs/tiny/sft", "sampling": {"temperature": 1.0, ...}, "time": "2026-11-29T10:00:00"}

`ranking` lists groups of reply indices, best first; the replies of one group are tied. `status` is
"ranked", "skipped" (the person passed; no pairs) or "all_bad" (every reply is bad; all tied, no pairs).
Several raters may rank one prompt: what is in force is keyed by (prompt id, rater), one answer each.
An undo appends {"undo": "<id>", "rater": "<name>"}, which withdraws that rater's latest entry for the
prompt (an older undo without a rater, from before several raters, withdraws the prompt's latest entry):
the file is only ever appended to, so what a person gave is never rewritten. Readers ignore an unterminated
tail (an append cut short by a kill).

A ranking of K replies in a strict order gives K·(K−1)/2 pairs (InstructGPT's comparisons); ties give none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llm.chat import Reply
from llm.data.preferences import PreferencePair
from llm.errors import DataError
from llm.run_files import BadLine, jsonl_lines

STATUSES = ("ranked", "skipped", "all_bad")


def prompt_id(prompt: Sequence[dict]) -> str:
    """A stable id for a prompt (its messages), so a restart knows which prompts are done."""
    canonical = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Ranking:
    prompt: list[dict]
    replies: list[Reply]
    ranking: list[list[int]]  # groups of reply indices, best first; one group's replies are tied
    status: str = "ranked"
    rater: str = "person"
    checkpoint: str = ""
    sampling: dict = field(default_factory=dict)
    time: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or prompt_id(self.prompt)
        check_ranking(self.ranking, len(self.replies), self.status)

    @property
    def key(self) -> tuple[str, str]:
        """What one answer in force is keyed by: each rater gives at most one per prompt."""
        return self.id, self.rater

    def to_json(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "replies": [reply_json(r) for r in self.replies],
                "ranking": self.ranking, "status": self.status, "rater": self.rater,
                "checkpoint": self.checkpoint, "sampling": self.sampling, "time": self.time}

    @classmethod
    def from_json(cls, record: dict) -> Ranking:
        replies = [Reply(str(r["text"]), bool(r.get("finished", True))) for r in record["replies"]]
        return cls(record["prompt"], replies, [list(map(int, g)) for g in record.get("ranking", [])],
                   record.get("status", "ranked"), record.get("rater", ""), record.get("checkpoint", ""),
                   record.get("sampling", {}), record.get("time", ""), record.get("id", ""))


def reply_json(reply: Reply) -> dict:
    """A reply as the file and the ranking page hold it: what was shown, and whether it ended by itself."""
    return {"text": reply.text, "finished": reply.finished}


def check_ranking(ranking: list[list[int]], n_replies: int, status: str) -> None:
    """A ranked status orders every reply exactly once; skipped and all_bad carry no order. Raises ValueError."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {shown(status)}")
    if status != "ranked":
        if ranking:
            raise ValueError(f"a {status} entry has no ranking; got {shown(ranking)}")
        return
    flat = [i for group in ranking for i in group]
    if sorted(flat) != list(range(n_replies)) or any(not group for group in ranking):
        raise ValueError(f"the ranking must place each of the {n_replies} replies (0-{n_replies - 1}) exactly once, "
                         f"in non-empty groups; got {shown(ranking)}")


def shown(value, limit: int = 60) -> str:
    """A value in an error line, cut short: an error never echoes a whole submission back."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ranking_pairs(ranking: Ranking) -> list[PreferencePair]:
    """Every (better, worse) pair of a ranking: K·(K−1)/2 for a strict order, none between tied replies.

    All pairs carry one group per ranking (prompt id and rater), so the reward stage can batch and weight them as one."""
    if ranking.status != "ranked":
        return []
    pairs = []
    for above, group in enumerate(ranking.ranking):
        for lower in ranking.ranking[above + 1 :]:
            for i in group:
                for j in lower:
                    better, worse = ranking.replies[i], ranking.replies[j]
                    if (better.text, better.finished) != (worse.text, worse.finished):
                        pairs.append(order_pair(ranking.prompt, better, worse, group_of(ranking)))
    return pairs


def order_pair(prompt: list[dict], better: Reply, worse: Reply, group: str) -> PreferencePair:
    """Two replies in a rater's order as the preference pair the reward stage trains on, batched by `group`."""
    return PreferencePair(prompt, better.text, worse.text, "ranking", better.finished, worse.finished, group=group)


def group_of(ranking: Ranking) -> str:
    return f"{ranking.id}:{ranking.rater}"


def in_validation(ranking_id: str, val_fraction: float, seed: int) -> bool:
    """The held-out split, by prompt: a hash of the id, so a growing file never moves a ranking across."""
    digest = hashlib.sha256(f"{seed}:{ranking_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


Key = tuple[str, str]  # (prompt id, rater)


def fold(records: Iterable[dict]) -> dict[Key, Ranking]:
    """The entries in force, by (prompt id, rater), in the order first given: an undo withdraws its rater's
    latest entry for its id, or without a rater (a file from before several raters) the id's latest entry."""
    stacks: dict[Key, list[tuple[int, Ranking]]] = {}
    for number, record in enumerate(records):
        if "undo" not in record:
            entry = Ranking.from_json(record)
            stacks.setdefault(entry.key, []).append((number, entry))
            continue
        undone = str(record["undo"])
        if "rater" in record:
            stack = stacks.get((undone, str(record["rater"])), [])
        else:
            stack = max((s for key, s in stacks.items() if key[0] == undone and s), key=lambda s: s[-1][0], default=[])
        if stack:
            stack.pop()
    return {key: stack[-1][1] for key, stack in stacks.items() if stack}


def read_lines(path: Path) -> list[dict]:
    """Every complete line of a rankings file; a malformed complete line is an error naming file:line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such rankings file") from None
    return parse_lines(path, data)[0]


def parse_lines(path: Path, data: bytes, first_number: int = 1) -> tuple[list[dict], int]:
    """The records of the complete lines in `data` (numbered from `first_number`) and the bytes they take:
    the part after the last newline is an unfinished append, left for later."""
    complete = data.rfind(b"\n") + 1
    records = []
    for where, record in jsonl_lines(path, data[:complete].split(b"\n")[:-1], first_number):
        try:
            if isinstance(record, BadLine):
                raise ValueError(record.problem)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if "undo" not in record:
                Ranking.from_json(record)
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise DataError(f"{where}: not a ranking record ({type(err).__name__}: {err})") from None
        records.append(record)
    return records, complete


def load_rankings(path: str | Path) -> list[Ranking]:
    """The rankings in force in a file, in the order first given."""
    return list(fold(read_lines(Path(path))).values())
