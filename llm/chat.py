"""Sampling a model's reply, written once: the stops, a seeded generator, the chat template, one Reply; and a
multi-turn chat session that keeps its history within the context and streams its replies.

Every tool that samples (`llm sample`, `llm chat`, the web pages and the API, the evaluations, PPO's rollouts)
takes its settings from chat_sampling or text_sampling and its generator from seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.settings_checks import check_sampling
from llm.tokenizer import Tokenizer, render_prompt


@dataclass(frozen=True)
class Reply:
    text: str
    finished: bool = True  # ended by itself (end-of-turn or end-of-text) within the length limit
    tokens: tuple[int, ...] = ()  # the new tokens, the stop token included when one was produced


def chat_sampling(tok: Tokenizer, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0) -> SamplingParams:
    """Settings for an assistant's turn: it ends at end-of-turn, or end-of-text; greedy at temperature 0."""
    return SamplingParams(max_new_tokens, temperature, top_k, top_p, (tok.end_id, tok.eos_id))


def text_sampling(tok: Tokenizer, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> SamplingParams:
    """Settings for continuing plain text (a pre-trained model): it ends at end-of-text."""
    return SamplingParams(max_new_tokens, temperature, top_k, top_p, (tok.eos_id,))


def seeded(model: torch.nn.Module, seed: int) -> torch.Generator:
    """A generator of its own on the model's device: sampling draws from it, never from the global RNG that training's
    batches and dropout use, so the same seed gives the same replies wherever it runs."""
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


def chat_prompt_ids(tok: Tokenizer, prompt: str | Sequence[dict]) -> list[int]:
    """A user's message (or a whole conversation) in the chat template, ready for the assistant's turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return render_prompt(tok, messages)


def generate_replies(model: GPT, tok: Tokenizer, prompts: Sequence[str | Sequence[dict]], max_new_tokens: int,
                     temperature: float = 0.0, top_k: int = 0, batch_size: int = 64, seed: int = 0) -> list[Reply]:
    """Replies of the model in the chat template, in batches; greedy at temperature 0."""
    params = chat_sampling(tok, max_new_tokens, temperature, top_k)
    generator = seeded(model, seed)
    replies = []
    for start in range(0, len(prompts), batch_size):
        ids = [chat_prompt_ids(tok, p) for p in prompts[start : start + batch_size]]
        out = generate(model, ids, params, tok.pad_id, generator=generator)
        replies.extend(Reply(tok.decode(t), f, tuple(t)) for t, f in zip(out.tokens, out.finished))
    return replies


def prompt_budget(block_size: int, max_new_tokens: int) -> int:
    """The most prompt tokens a reply of `max_new_tokens` leaves room for: the reply gets its length, up to half
    the context."""
    return block_size - min(max_new_tokens, block_size // 2)


def fit_prompt(tok: Tokenizer, messages: list[dict], block_size: int, max_new_tokens: int, system: str = "") -> list[int]:
    """The conversation rendered for a reply, dropping the oldest exchanges until the reply has room in the
    context (at least half of it); a single message still too long keeps its most recent tokens."""
    budget = prompt_budget(block_size, max_new_tokens)
    history = list(messages)
    while True:
        head = [{"role": "system", "content": system}] if system else []
        ids = render_prompt(tok, head + history)
        if len(ids) <= budget or len(history) <= 1:
            return ids[-budget:]
        history = history[2:] if len(history) > 2 else history[1:]


class ChatSession:
    def __init__(self, model: GPT, tok: Tokenizer, max_new_tokens: int = 200, temperature: float = 0.7,
                 top_k: int = 50, system: str = "", seed: int = 0):
        check_sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)  # now, not at the first reply
        self.model, self.tok = model, tok
        self.max_new_tokens, self.temperature, self.top_k = max_new_tokens, temperature, top_k
        self.system = system
        self.messages: list[dict] = []
        self.generator = seeded(model, seed)

    def reset(self) -> None:
        self.messages = []

    def prompt_ids(self) -> list[int]:
        return fit_prompt(self.tok, self.messages, self.model.config.block_size, self.max_new_tokens, self.system)

    def reply(self, text: str, on_token: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """The assistant's answer to `text`, streamed through `on_token`; whether it ended with <|end|>."""
        self.messages.append({"role": "user", "content": text})
        params = chat_sampling(self.tok, self.max_new_tokens, self.temperature, self.top_k)
        answer, finished = reply_to(self.model, self.tok, self.messages, params, self.generator, on_token, self.system)
        self.messages.append({"role": "assistant", "content": answer})
        return answer, finished


def reply_to(model: GPT, tok: Tokenizer, messages: list[dict], params: SamplingParams, generator: torch.Generator | None,
             on_token: Callable[[int], None] | None = None, system: str = "") -> tuple[str, bool]:
    """The assistant's next turn after `messages` (cut to fit as `fit_prompt` does); whether it ended by itself.

    The terminal chat and the chat page both answer through this, so they share the template and the stops."""
    ids = fit_prompt(tok, messages, model.config.block_size, params.max_new_tokens, system)
    out = generate(model, [ids], params, tok.pad_id, generator=generator,
                   on_token=(lambda row, token: on_token(token)) if on_token else None)
    return tok.decode(out.tokens[0]), out.finished[0]
