"""Rankings of K replies to one prompt, as people (or a rater program) give them: the file and its pairs.

The file is JSON Lines, one object per ranking, appended the moment it is given:

    {"id": "3f9c...", "prompt": [{"role": "user", "content": "Say cat 2 times."}],
     "replies": [{"text": "cat cat", "finished": true}, {"text": "Sure! cat cat", "finished": true}, ...],
     "ranking": [[0], [1, 3], [2]], "status": "ranked", "rater": "person",
     "checkpoint": "runs/tiny/sft", "sampling": {"temperature": 1.0, ...}, "time": "2026-11-29T10:00:00"}

`ranking` lists groups of reply indices, best first; the replies of one group are tied. `status` is
"ranked", "skipped" (the person passed; no pairs) or "all_bad" (every reply is bad; all tied, no pairs).
Several raters may rank one prompt: what is in force is keyed by (prompt id, rater), one answer each.
An undo appends {"undo": "<id>", "rater": "<name>"}, which withdraws that rater's latest entry for the
prompt (an older undo without a rater, from before several raters, withdraws the prompt's latest entry):
the file is only ever appended to, so what a person gave is never rewritten.

Each append is one write(2) of a whole line to a file opened with O_APPEND, under an exclusive flock, then
fsync: two writers never interleave, and a line on disk is a line given. Under that lock the writer first
takes in what other processes appended (so it never answers from stale state), cuts an unterminated tail
left by a process killed inside its write, and checks the answer is still wanted (a prompt this rater, or
enough other raters, ranked in another process is refused, not silently replaced). A short or failed write is cut back before the error
is raised, so the next line never lands glued to a fragment. Readers ignore an unterminated tail.

A ranking of K replies in a strict order gives K·(K−1)/2 pairs (InstructGPT's comparisons); ties give none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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

    @property
    def key(self) -> tuple[str, str]:
        """What one answer in force is keyed by: each rater gives at most one per prompt."""
        return self.id, self.rater

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
                        pairs.append(PreferencePair(ranking.prompt, better.text, worse.text, "ranking",
                                                    better.finished, worse.finished, group=group_of(ranking)))
    return pairs


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
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], first_number):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if "undo" not in record:
                Ranking.from_json(record)
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise DataError(f"{path}:{number}: not a ranking record ({type(err).__name__}: {err})") from None
        records.append(record)
    return records, complete


def load_rankings(path: str | Path) -> list[Ranking]:
    """The rankings in force in a file, in the order first given."""
    return list(fold(read_lines(Path(path))).values())


class AlreadyRanked(Exception):
    """The prompt's answer was given meanwhile by another page or process; this one is not written."""


class WriteFailed(Exception):
    """An append that did not reach the disk; nothing of it is left in the file. Its message is one line."""


Check = Callable[[dict[Key, "Ranking"]], None]  # raises AlreadyRanked when an append is no longer wanted


def raters_of(in_force: dict[Key, Ranking], prompt_id_: str) -> list[str]:
    return [rater for id_, rater in in_force if id_ == prompt_id_]


def not_answered(prompt_id_: str, rater: str, raters_per_prompt: int = 1) -> Check:
    """A check that refuses an answer this rater already gave for the prompt (another page of theirs was
    first), or one the prompt no longer needs: `raters_per_prompt` other raters answered it meanwhile."""
    def check(in_force: dict[Key, Ranking]) -> None:
        if (prompt_id_, rater) in in_force:
            raise AlreadyRanked("this prompt was already ranked by another page of yours; here is the next one")
        if len(raters_of(in_force, prompt_id_)) >= raters_per_prompt:
            raise AlreadyRanked("this prompt was already ranked by another page; here is the next one")
    return check


class RankingFile:
    """Appends to a rankings file, safely from several threads and processes; knows what is in force."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self._seen = 0  # bytes of the file already in self.records: always just after a newline
        self._lines = 0  # lines already in self.records (for file:line in errors)
        self._in_force: dict[Key, Ranking] | None = None  # fold(self.records), until the records change
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.lock, self.locked_fd() as fd:
                self.cut_unfinished_tail(fd)
                self.catch_up()
        except OSError as err:
            raise DataError(f"{self.path}: cannot open the rankings file for appending ({err.strerror})") from None

    def locked_fd(self):
        return _LockedAppend(self.path)

    def cut_unfinished_tail(self, fd: int) -> int:
        """Truncate a last line without a newline (a writer died inside its write); the size kept.
        Called under the file lock, where no live writer can be half way through a line."""
        size = os.fstat(fd).st_size
        if not size:
            return 0
        with open(self.path, "rb") as f:
            f.seek(max(self._seen, 0))
            data = f.read()
        if not data or data.endswith(b"\n"):
            return size
        keep = self._seen + data.rfind(b"\n") + 1
        os.ftruncate(fd, keep)
        os.fsync(fd)
        print(f"{self.path}: cut an unfinished last line ({size - keep} bytes) left by an interrupted write")
        return keep

    def in_force(self) -> dict[Key, Ranking]:
        """What is in force now, with what other processes appended; folded once per change of the records."""
        with self.lock:
            self.catch_up()
            if self._in_force is None:
                self._in_force = fold(self.records)
            return dict(self._in_force)

    def append(self, record: dict, check: Check | None = None) -> None:
        """One line, written whole, flushed and fsynced before this returns; `check` sees what is in force,
        with every other process's answers, just before the write, and may refuse it (AlreadyRanked)."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self.lock, self.locked_fd() as fd:
            start = self.cut_unfinished_tail(fd)
            self.catch_up()
            if check is not None:
                self._in_force = self._in_force if self._in_force is not None else fold(self.records)
                check(dict(self._in_force))
            self.write_whole(fd, line, start)
            self.records.append(record)
            self._seen, self._lines = start + len(line), self._lines + 1
            self._in_force = None

    def write_whole(self, fd: int, line: bytes, start: int) -> None:
        """Write and fsync `line` at the end (`start`), or cut the file back to `start` and raise WriteFailed."""
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        except OSError as err:
            reason = err.strerror or str(err)
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # the fragment stays unterminated: every reader ignores it and the next writer cuts it
            raise WriteFailed(f"{self.path}: the answer was not saved ({reason}); is the disk full?") from None

    def add(self, ranking: Ranking, check: Check | None = None) -> Ranking:
        ranking.time = ranking.time or time.strftime("%Y-%m-%dT%H:%M:%S")
        self.append(ranking.to_json(), check)
        return ranking

    def undo(self, ranking_id: str, rater: str, check: Check | None = None) -> None:
        self.append({"undo": ranking_id, "rater": rater, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, check)

    def catch_up(self) -> None:
        """Take in the complete lines other processes appended since we last read (under self.lock)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == self._seen:
            return
        with open(self.path, "rb") as f:
            f.seek(self._seen)
            data = f.read()
        records, used = parse_lines(self.path, data, self._lines + 1)
        if used:
            self.records.extend(records)
            self._seen += used
            self._lines += data[:used].count(b"\n")
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
