"""Rankings of K replies to one prompt, as people (or a rater program) give them: the file and its pairs.

The file is JSON Lines, one object per ranking, appended the moment it is given:

    {"id": "3f9c...", "prompt": [{"role": "user", "content": "Say cat 2 times."}],
     "replies": [{"text": "cat cat", "finished": true}, {"text": "Sure! cat cat", "finished": true}, ...],
     "ranking": [[0], [1, 3], [2]], "status": "ranked", "rater": "person",
     "checkpoint": "runs/tiny/sft", "sampling": {"temperature": 1.0, ...}, "time": "2026-11-29T10:00:00"}

`ranking` lists groups of reply indices, best first; the replies of one group are tied. `status` is
"ranked", "skipped" (the person passed; no pairs) or "all_bad" (every reply is bad; all tied, no pairs).
An undo appends {"undo": "<id>"}, which withdraws the latest entry for that prompt: the file is only ever
appended to, so what a person gave is never rewritten.

Each append is one write(2) of a whole line to a file opened with O_APPEND, under a lock, then fsync:
two writers never interleave, and a line on disk is a line given. A process killed inside that write
can leave at most an unterminated tail (no newline); readers ignore it and the next writer cuts it.

A ranking of K replies in a strict order gives K·(K−1)/2 pairs (InstructGPT's comparisons); ties give none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llm.data.preferences import PreferencePair
from llm.errors import DataError

STATUSES = ("ranked", "skipped", "all_bad")


def prompt_id(prompt: Sequence[dict]) -> str:
    """A stable id for a prompt (its messages), so a restart knows which prompts are done."""
    canonical = json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Reply:
    text: str
    finished: bool = True  # ended by itself (end-of-turn) rather than cut at max_new_tokens


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

    def to_json(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "replies": [vars(r) for r in self.replies],
                "ranking": self.ranking, "status": self.status, "rater": self.rater,
                "checkpoint": self.checkpoint, "sampling": self.sampling, "time": self.time}

    @classmethod
    def from_json(cls, record: dict) -> "Ranking":
        replies = [Reply(str(r["text"]), bool(r.get("finished", True))) for r in record["replies"]]
        return cls(record["prompt"], replies, [list(map(int, g)) for g in record.get("ranking", [])],
                   record.get("status", "ranked"), record.get("rater", ""), record.get("checkpoint", ""),
                   record.get("sampling", {}), record.get("time", ""), record.get("id", ""))


def check_ranking(ranking: list[list[int]], n_replies: int, status: str) -> None:
    """A ranked status orders every reply exactly once; skipped and all_bad carry no order. Raises ValueError."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    if status != "ranked":
        if ranking:
            raise ValueError(f"a {status} entry has no ranking; got {ranking}")
        return
    flat = [i for group in ranking for i in group]
    if sorted(flat) != list(range(n_replies)) or any(not group for group in ranking):
        raise ValueError(f"the ranking must place each of the {n_replies} replies (0-{n_replies - 1}) exactly once, "
                         f"in non-empty groups; got {ranking}")


def ranking_pairs(ranking: Ranking) -> list[PreferencePair]:
    """Every (better, worse) pair of a ranking: K·(K−1)/2 for a strict order, none between tied replies.

    All pairs carry the ranking's id as their group, so the reward stage can batch and weight them as one."""
    if ranking.status != "ranked":
        return []
    pairs = []
    for above, group in enumerate(ranking.ranking):
        for lower in ranking.ranking[above + 1 :]:
            for i in group:
                for j in lower:
                    better, worse = ranking.replies[i], ranking.replies[j]
                    if (better.text, better.finished) != (worse.text, worse.finished):
                        pairs.append(PreferencePair(ranking.prompt, better.text, worse.text, "ranking",
                                                    better.finished, worse.finished, group=ranking.id))
    return pairs


def in_validation(ranking_id: str, val_fraction: float, seed: int) -> bool:
    """The held-out split, by prompt: a hash of the id, so a growing file never moves a ranking across."""
    digest = hashlib.sha256(f"{seed}:{ranking_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def fold(records: Iterable[dict]) -> dict[str, Ranking]:
    """The entries in force, by prompt id, in the order given: an undo withdraws the latest entry for its id."""
    stacks: dict[str, list[Ranking]] = {}
    for record in records:
        if "undo" in record:
            stack = stacks.get(str(record["undo"]), [])
            if stack:
                stack.pop()
            continue
        entry = Ranking.from_json(record)
        stacks.setdefault(entry.id, []).append(entry)
    return {stack[-1].id: stack[-1] for stack in stacks.values() if stack}


def read_lines(path: Path) -> list[dict]:
    """Every complete line of a rankings file; a malformed complete line is an error naming file:line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such rankings file") from None
    lines = data.split(b"\n")
    records = []
    for number, line in enumerate(lines[:-1], 1):  # the part after the last newline is an unfinished append
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if "undo" not in record:
                Ranking.from_json(record)
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{number}: not a ranking record ({type(err).__name__}: {err})") from None
        records.append(record)
    return records


def load_rankings(path: str | Path) -> list[Ranking]:
    """The rankings in force in a file, in the order first given."""
    return list(fold(read_lines(Path(path))).values())


class RankingFile:
    """Appends to a rankings file, safely from several threads and processes; knows what is in force."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, self.locked_fd() as fd:
            self.cut_unfinished_tail(fd)
        self.records = read_lines(self.path)
        self._seen = self.path.stat().st_size  # bytes of the file already in self.records
        self._in_force: dict[str, Ranking] | None = None  # fold(self.records), until the records change

    def locked_fd(self):
        return _LockedAppend(self.path)

    def cut_unfinished_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if not size:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        os.ftruncate(fd, keep)
        os.fsync(fd)
        print(f"{self.path}: cut an unfinished last line ({size - keep} bytes) left by an interrupted write")

    def in_force(self) -> dict[str, Ranking]:
        """Folded once per change of the records, not at every request the pages make."""
        with self.lock:
            if self._in_force is None:
                self._in_force = fold(self.records)
            return dict(self._in_force)

    def append(self, record: dict) -> None:
        """One line, written whole, flushed and fsynced before this returns."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self.lock, self.locked_fd() as fd:
            self.catch_up()
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes); the disk may be full")
            os.fsync(fd)
            self.records.append(record)
            self._seen += len(line)
            self._in_force = None

    def add(self, ranking: Ranking) -> Ranking:
        ranking.time = ranking.time or time.strftime("%Y-%m-%dT%H:%M:%S")
        self.append(ranking.to_json())
        return ranking

    def undo(self, ranking_id: str) -> None:
        self.append({"undo": ranking_id, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def catch_up(self) -> None:
        """Take in what another process appended since we last read (called under the file lock)."""
        size = self.path.stat().st_size
        if self._seen == size:
            return
        self.records = read_lines(self.path)
        self._seen = size
        self._in_force = None


class _LockedAppend:
    """An O_APPEND descriptor held under an exclusive flock: one writer at a time across processes."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> int:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self.fd

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
