"""The rankings file as the ranking pages and rater programs write it: appends that are never lost, glued or
silently replaced. The format and its pairs are llm/data/rankings.py.

Each append is one write(2) of a whole line to a file opened with O_APPEND, under an exclusive flock, then
fsync: two writers never interleave, and a line on disk is a line given. Under that lock the writer first
takes in what other processes appended (so it never answers from stale state), cuts an unterminated tail
left by a process killed inside its write, and checks the answer is still wanted (a prompt this rater, or
enough other raters, ranked in another process is refused, not silently replaced). A short or failed write is
cut back before the error is raised, so the next line never lands glued to a fragment.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from llm.data.rankings import Key, Ranking, fold, parse_lines
from llm.errors import DataError


class AlreadyRanked(Exception):
    """The prompt's answer was given meanwhile by another page or process; this one is not written."""


class WriteFailed(Exception):
    """An append that did not reach the disk; nothing of it is left in the file. Its message is one line."""


Check = Callable[[dict[Key, "Ranking"]], None]  # raises AlreadyRanked when an append is no longer wanted


def answers_per_prompt(in_force: dict[Key, Ranking]) -> Counter[str]:
    """How many raters have an answer in force for each prompt id: counted once, then looked up per prompt."""
    return Counter(id_ for id_, _ in in_force)


def not_answered(prompt_id_: str, rater: str, raters_per_prompt: int = 1) -> Check:
    """A check that refuses an answer this rater already gave for the prompt (another page of theirs was
    first), or one the prompt no longer needs: `raters_per_prompt` other raters answered it meanwhile."""
    def check(in_force: dict[Key, Ranking]) -> None:
        if (prompt_id_, rater) in in_force:
            raise AlreadyRanked("this prompt was already ranked by another page of yours; here is the next one")
        if answers_per_prompt(in_force)[prompt_id_] >= raters_per_prompt:
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
