"""A ranking session: which prompt a person sees next, its K sampled replies, and what they gave.

Shared by the web page and the terminal, so both keep the same rules:
- prompts come from the built-in tasks, a file, or the person's own typing; each prompt goes to up to
  `raters_per_prompt` distinct raters (default 1), counting those whose answers (ranked, skipped or all
  bad) are in the rankings file and the tabs holding it; a rater never sees a prompt they answered, also
  after a restart;
- each tab (a browser tab, or the terminal) holds at most one prompt at a time, the same one after a
  reload; two tabs of one rater never hold the same prompt; a tab silent for `hold_s` (closed, abandoned)
  lets its prompt go to the next tab that needs one;
- a prompt's replies are sampled once per server run, with a seed drawn from the prompt, or taken from
  another rater's answer already in the file, so every rater ranks the same replies and the person ranks
  what was shown; an undo puts the ranking's prompt and replies back before the tab. The sampling runs
  outside the session's lock, so another tab's answer never waits behind it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llm.chat import Reply
from llm.data.builtin_tasks import builtin_tasks
from llm.data.rankings import Key, Ranking, prompt_id, reply_json
from llm.data.records import check_messages
from llm.data.tasks import Task
from llm.errors import DataError
from llm.feedback.rankings import AlreadyRanked, RankingFile, answers_per_prompt, not_answered
from llm.run_files import BadLine, jsonl_lines


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
        return {"id": self.id, "prompt": self.prompt, "replies": [reply_json(r) for r in self.replies]}


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
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such prompts file") from None
    if path.suffix != ".jsonl":
        lines = data.decode("utf-8").splitlines()
        return iter([Item([{"role": "user", "content": line.strip()}]) for line in lines if line.strip()])
    return iter([Item(prompt_messages(where, record)) for where, record in jsonl_lines(path, data.splitlines())])


def prompt_messages(where: str, record) -> list[dict]:
    """A prompts file's record as the user's messages; an error names the file:line."""
    try:
        if isinstance(record, BadLine):
            raise ValueError(record.problem)
        prompt = record["prompt"]
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else check_messages(prompt, "prompt")
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{where}: expected a JSON object with a 'prompt' ({type(err).__name__}: {err})") from None


def seed_for(item_id: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest()[:8], 16)


class RankingSession:
    def __init__(self, store: RankingFile, prompts: Iterator[Item], sample: Sample, target: int = 50,
                 checkpoint: str = "", sampling: dict | None = None, seed: int = 0, rater: str = "person",
                 hold_s: float = HOLD_S, clock: Callable[[], float] = time.monotonic, raters_per_prompt: int = 1):
        if raters_per_prompt < 1:
            raise ValueError(f"raters_per_prompt must be 1 or more; got {raters_per_prompt}")
        self.store, self.prompts, self.sample, self.rater = store, prompts, sample, rater
        self.hold_s, self.clock, self.raters_per_prompt = hold_s, clock, raters_per_prompt
        self.seen: dict[str, float] = {}  # tab -> when it last asked or answered
        self.target, self.checkpoint, self.sampling, self.seed = target, checkpoint, sampling or {}, seed
        self.lock = threading.RLock()
        self.held: dict[str, Item] = {}  # tab -> the prompt it shows
        self.rater_of: dict[str, str] = {}  # tab -> the rater it shows prompts to (the latest to ask or give there)
        self.pool: list[Item] = []  # prompts this run has shown that other raters may still need; returned ones first
        self.given: dict[str, list[Ranking]] = {}  # tab -> what it gave this run, latest last (for undo)

    def progress(self) -> dict:
        in_force = self.store.in_force().values()
        return {"ranked": sum(r.status == "ranked" for r in in_force), "done": len(in_force), "target": self.target}

    def tab_rater(self, tab: str, rater: str) -> str:
        """The rater behind a tab: the one named, else the last one named there, else the session's."""
        self.rater_of[tab] = rater or self.rater_of.get(tab) or self.rater
        return self.rater_of[tab]

    def current(self, tab: str = "", rater: str = "") -> Item | None:
        """The prompt this tab shows: the one it holds, or the next one its rater has not answered and that still
        needs raters. Its replies are sampled outside the lock (the seed is the prompt's, so two concurrent
        samplings agree), unless another rater's answer in the file has them."""
        with self.lock:
            self.seen[tab] = self.clock()
            rater = self.tab_rater(tab, rater)
            if tab not in self.held:
                item = self.next_free(tab, rater)
                if item is None:
                    return None
                self.held[tab] = item
            item = self.held[tab]
        if not item.replies:
            replies = replies_given(self.store.in_force(), item.id) or self.sample([item.prompt], seed_for(item.id, self.seed))[0]
            with self.lock:
                item.replies = item.replies or replies
        return item

    def let_go_of_silent_tabs(self) -> None:
        """The prompts of tabs silent for hold_s go back to the queue, first (called under the lock)."""
        now = self.clock()
        for tab in [tab for tab in self.held if now - self.seen.get(tab, now) > self.hold_s]:
            self.let_go(tab)

    def let_go(self, tab: str) -> None:
        """The tab's prompt goes to the front of the pool, for the next tab that needs one."""
        item = self.held.pop(tab)
        self.pool = [item] + [other for other in self.pool if other is not item]

    def wanted(self, item: Item, tab: str, rater: str, in_force: dict[Key, Ranking], answers: Counter[str]) -> bool:
        """Whether the tab's rater may have the prompt: not answered by them, not held by another of their tabs,
        and fewer than raters_per_prompt raters have answered it (`answers`, per prompt) or hold it elsewhere."""
        if (item.id, rater) in in_force:
            return False
        holders = [other for other, held in self.held.items() if held.id == item.id and other != tab]
        if any(self.rater_of.get(other) == rater for other in holders):
            return False
        return answers[item.id] + len(holders) < self.raters_per_prompt

    def next_free(self, tab: str, rater: str) -> Item | None:
        self.let_go_of_silent_tabs()
        in_force = self.store.in_force()
        answers = answers_per_prompt(in_force)
        self.pool = [item for item in self.pool if answers[item.id] < self.raters_per_prompt]
        for item in self.pool:
            if self.wanted(item, tab, rater, in_force, answers):
                return item
        for item in self.prompts:
            if answers[item.id] >= self.raters_per_prompt:
                continue
            self.pool.append(item)  # kept for the other raters it still needs
            if self.wanted(item, tab, rater, in_force, answers):
                return item
        return None

    def type_prompt(self, text: str, tab: str = "", rater: str = "") -> Item:
        """The person's own prompt becomes this tab's; the one it held goes back to the queue."""
        if not text.strip():
            raise ValueError("the prompt is empty")
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is {len(text)} characters; at most {MAX_PROMPT_CHARS} are taken")
        item = Item([{"role": "user", "content": text.strip()}])
        with self.lock:
            self.seen[tab] = self.clock()
            rater = self.tab_rater(tab, rater)
            in_force = self.store.in_force()
            answers = answers_per_prompt(in_force)
            if (item.id, rater) in in_force or answers[item.id] >= self.raters_per_prompt:
                raise ValueError("this prompt is already in the rankings file")
            if not self.wanted(item, tab, rater, in_force, answers):
                raise ValueError("another tab is ranking this prompt")
            if tab in self.held:
                self.let_go(tab)
            self.held[tab] = item
        return self.current(tab)

    def give(self, item_id: str, ranking: list[list[int]], status: str = "ranked", tab: str = "",
             rater: str = "") -> Ranking:
        """Record the tab's answer for the prompt it holds; ValueError when it holds another or the answer is bad,
        AlreadyRanked (and the tab lets the prompt go) when this rater, or enough other raters, answered it
        meanwhile in another process."""
        with self.lock:
            self.seen[tab] = self.clock()
            rater = self.tab_rater(tab, rater)
            item = self.held.get(tab)
            if item is None or item.id != item_id:
                raise ValueError(f"prompt {item_id} is not the one this tab shows (already given, or another tab's)")
            entry = Ranking(item.prompt, item.replies, ranking, status, rater, self.checkpoint, self.sampling)
            try:
                self.store.add(entry, check=not_answered(item_id, rater, self.raters_per_prompt))
            except AlreadyRanked:
                del self.held[tab]
                raise
            del self.held[tab]
            self.given.setdefault(tab, []).append(entry)
            return entry

    def undo(self, tab: str = "", rater: str = "") -> Item | None:
        """Withdraw this tab's latest answer of this run (its rater's own); its prompt, with the same replies,
        comes back first. A failed write keeps the answer undoable; one that another process replaced
        meanwhile is AlreadyRanked."""
        with self.lock:
            self.seen[tab] = self.clock()
            rater = self.tab_rater(tab, rater)
            given = [entry for entry in self.given.get(tab, []) if entry.rater == rater]
            if not given:
                return None
            entry = given[-1]
            try:
                self.store.undo(entry.id, entry.rater, check=lambda in_force: still_ours(entry, in_force))
            except AlreadyRanked:
                self.given[tab] = [other for other in self.given[tab] if other is not entry]
                raise
            self.given[tab] = [other for other in self.given[tab] if other is not entry]
            if tab in self.held:
                self.let_go(tab)
            self.held[tab] = Item(entry.prompt, None, entry.replies, entry.id)
            return self.held[tab]


def replies_given(in_force: dict[Key, Ranking], item_id: str) -> list[Reply]:
    """The replies another rater ranked for this prompt, so all its raters rank the same ones; [] if none."""
    return next((entry.replies for key, entry in in_force.items() if key[0] == item_id), [])


def still_ours(entry: Ranking, in_force: dict[Key, Ranking]) -> None:
    if in_force.get(entry.key) != entry:
        raise AlreadyRanked("this answer was withdrawn or replaced by another page; nothing to undo")
