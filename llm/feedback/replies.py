"""K replies to a prompt, sampled from a checkpoint the way chat.py samples (same template, same cut)."""

from __future__ import annotations

import threading
from collections import deque

from llm.chat import Reply, fit_prompt, seeded
from llm.feedback.session import Sample
from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.tokenizer import Tokenizer


class FairLock:
    """A lock granted in the order it was asked for. The chat worker re-takes a plain Lock the moment it
    releases it, batch after batch, and the ranking sampler waiting meanwhile can starve; here it is next."""

    def __init__(self):
        self.mutex = threading.Lock()
        self.waiting: deque[threading.Event] = deque()
        self.held = False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        with self.mutex:
            if not self.held and not self.waiting:
                self.held = True
                return True
            if not blocking:
                return False
            turn = threading.Event()
            self.waiting.append(turn)
        if turn.wait(None if timeout < 0 else timeout):
            return True
        with self.mutex:
            if turn.is_set():  # handed over just as the wait ran out
                return True
            self.waiting.remove(turn)
            return False

    def release(self) -> None:
        with self.mutex:
            if self.waiting:
                self.waiting.popleft().set()  # handed to the next in line: it stays held
            else:
                self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def model_sampler(model: GPT, tok: Tokenizer, k: int, params: SamplingParams,
                  lock: threading.Lock | None = None) -> Sample:
    """A `Sample` for RankingSession; `lock` serialises use of the model with others (the chat page)."""
    lock = lock or threading.Lock()

    def sample(prompts: list[list[dict]], seed: int) -> list[list[Reply]]:
        ids = [fit_prompt(tok, prompt, model.config.block_size, params.max_new_tokens) for prompt in prompts]
        generator = seeded(model, seed)
        with lock:
            out = generate(model, [row for row in ids for _ in range(k)], params, tok.pad_id, generator=generator)
        replies = [Reply(tok.decode(tokens), finished) for tokens, finished in zip(out.tokens, out.finished)]
        return [replies[i * k : (i + 1) * k] for i in range(len(prompts))]

    return sample

