"""A ranking session: which prompt a person sees next, its K sampled replies, and what they gave.

Shared by the web page and the terminal, so both keep the same rules:
- prompts come from the built-in tasks, a file, or the person's own typing; a prompt already in force
  in the rankings file (ranked, skipped or all bad) is never shown again, also after a restart;
- each tab (a browser tab, or the terminal) holds at most one prompt at a time, the same one after a
  reload, and two tabs never hold the same prompt; a tab silent for `hold_s` (closed, abandoned) lets its
  prompt go to the next tab that needs one;
- a prompt's replies are sampled once per server run, with a seed drawn from the prompt, so the
  person ranks what was shown; an undo puts the ranking's prompt and replies back before the tab. The
  sampling runs outside the session's lock, so another tab's answer never waits behind it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llm.data.builtin_tasks import builtin_tasks
from llm.data.records import check_messages
from llm.data.tasks import Task
from llm.errors import DataError
from llm.feedback.rankings import AlreadyRanked, Ranking, RankingFile, Reply, not_answered, prompt_id


@dataclass
class Item:
    """A prompt put before a person: what they rank."""
    prompt: list[dict]
    task: Task | None = None  # the built-in task it asks, for a rater program; None for a file's or a typed one
    replies: list[Reply] = field(default_factory=list)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or prompt_id(self.prompt)

    def to_json(self) -> dict:
        return {"id": self.id, "prompt": self.prompt, "replies": [vars(r) for r in self.replies]}


HOLD_S = 30 * 60  # a tab that has not asked or answered for this long has been closed or abandoned
MAX_PROMPT_CHARS = 4000  # a typed prompt; the model's context is far shorter, and each becomes a line of the file
Sample = Callable[[list[list[dict]], int], list[list[Reply]]]  # (prompts' messages, seed) -> K replies to each


def builtin_items(seed: int = 0, split: str = "train", kinds: Sequence[str] | None = None, chunk: int = 500) -> Iterator[Item]:
    """The built-in tasks' questions (of `kinds`, None = all), endlessly, in a fixed order for a given seed;
    split "val" gives the held-out tasks, which no training source asks (for a test set of rankings)."""
    round_ = 0
    while True:
        for task in builtin_tasks(split, chunk, seed * 1_000_003 + round_, kinds):
            yield Item([{"role": "user", "content": task.prompt}], task)
        round_ += 1


def file_items(path: str | Path) -> Iterator[Item]:
    """Prompts from a file: JSON Lines with a "prompt" (text or a message list), or plain text, one per line.
    The whole file is read and checked now, so a bad line fails at start, naming file:line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such prompts file") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                prompt = json.loads(line)["prompt"]
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else check_messages(prompt, "prompt")
            except (ValueError, KeyError, TypeError) as err:
                raise DataError(f"{path}:{number}: expected a JSON object with a 'prompt' ({type(err).__name__}: {err})") from None
        else:
            messages = [{"role": "user", "content": line.strip()}]
        items.append(Item(messages))
    return iter(items)


def seed_for(item_id: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:8], 16)


class RankingSession:
    def __init__(self, store: RankingFile, prompts: Iterator[Item], sample: Sample, target: int = 50,
                 checkpoint: str = "", sampling: dict | None = None, seed: int = 0, rater: str = "person",
                 hold_s: float = HOLD_S, clock: Callable[[], float] = time.monotonic):
        self.store, self.prompts, self.sample, self.rater = store, prompts, sample, rater
        self.hold_s, self.clock = hold_s, clock
        self.seen: dict[str, float] = {}  # tab -> when it last asked or answered
        self.target, self.checkpoint, self.sampling, self.seed = target, checkpoint, sampling or {}, seed
        self.lock = threading.RLock()
        self.held: dict[str, Item] = {}  # tab -> the prompt it shows
        self.returned: list[Item] = []  # prompts to show again before new ones (undone, or typed)
        self.given: dict[str, list[Ranking]] = {}  # tab -> what it gave this run, latest last (for undo)

    def progress(self) -> dict:
        in_force = self.store.in_force().values()
        return {"ranked": sum(r.status == "ranked" for r in in_force), "done": len(in_force), "target": self.target}

    def current(self, tab: str = "") -> Item | None:
        """The prompt this tab shows: the one it holds, or the next one nobody has done or holds. Its replies
        are sampled outside the lock (the seed is the prompt's, so two concurrent samplings agree)."""
        with self.lock:
            self.seen[tab] = self.clock()
            if tab not in self.held:
                item = self.next_free()
                if item is None:
                    return None
                self.held[tab] = item
            item = self.held[tab]
        if not item.replies:
            replies = self.sample([item.prompt], seed_for(item.id, self.seed))[0]
            with self.lock:
                item.replies = item.replies or replies
        return item

    def let_go_of_silent_tabs(self) -> None:
        """The prompts of tabs silent for hold_s go back to the queue, first (called under the lock)."""
        now = self.clock()
        for tab in [tab for tab in self.held if now - self.seen.get(tab, now) > self.hold_s]:
            self.returned.insert(0, self.held.pop(tab))

    def next_free(self) -> Item | None:
        self.let_go_of_silent_tabs()
        done = self.store.in_force()
        taken = {item.id for item in self.held.values()}
        while self.returned:
            item = self.returned.pop(0)
            if item.id not in done and item.id not in taken:
                return item
        for item in self.prompts:
            if item.id not in done and item.id not in taken:
                return item
        return None

    def type_prompt(self, text: str, tab: str = "") -> Item:
        """The person's own prompt becomes this tab's; the one it held goes back to the queue."""
        if not text.strip():
            raise ValueError("the prompt is empty")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is {len(text)} characters; at most {MAX_PROMPT_CHARS} are taken")
        item = Item([{"role": "user", "content": text.strip()}])
        with self.lock:
            self.seen[tab] = self.clock()
            if item.id in self.store.in_force():
                raise ValueError("this prompt is already in the rankings file")
            if any(held.id == item.id for other, held in self.held.items() if other != tab):
                raise ValueError("another tab is ranking this prompt")
            if tab in self.held:
                self.returned.insert(0, self.held.pop(tab))
            self.held[tab] = item
        return self.current(tab)

    def give(self, item_id: str, ranking: list[list[int]], status: str = "ranked", tab: str = "",
             rater: str = "") -> Ranking:
        """Record the tab's answer for the prompt it holds; ValueError when it holds another or the answer is bad,
        AlreadyRanked (and the tab lets the prompt go) when another process answered it meanwhile."""
        with self.lock:
            self.seen[tab] = self.clock()
            item = self.held.get(tab)
            if item is None or item.id != item_id:
                raise ValueError(f"prompt {item_id} is not the one this tab shows (already given, or another tab's)")
            entry = Ranking(item.prompt, item.replies, ranking, status, rater or self.rater, self.checkpoint, self.sampling)
            try:
                self.store.add(entry, check=not_answered(item_id))
            except AlreadyRanked:
                del self.held[tab]
                raise
            del self.held[tab]
            self.given.setdefault(tab, []).append(entry)
            return entry

    def undo(self, tab: str = "") -> Item | None:
        """Withdraw this tab's latest answer of this run; its prompt, with the same replies, comes back first.
        A failed write keeps the answer undoable; one that another process replaced meanwhile is AlreadyRanked."""
        with self.lock:
            self.seen[tab] = self.clock()
            given = self.given.get(tab, [])
            if not given:
                return None
            entry = given[-1]
            try:
                self.store.undo(entry.id, check=lambda in_force: still_ours(entry, in_force))
            except AlreadyRanked:
                given.pop()
                raise
            given.pop()
            if tab in self.held:
                self.returned.insert(0, self.held.pop(tab))
            self.held[tab] = Item(entry.prompt, None, entry.replies, entry.id)
            return self.held[tab]


def still_ours(entry: Ranking, in_force: dict[str, Ranking]) -> None:
    if in_force.get(entry.id) != entry:
        raise AlreadyRanked("this answer was withdrawn or replaced by another page; nothing to undo")
