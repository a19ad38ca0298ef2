"""A multi-turn chat session: history kept within the context, replies streamed, stop at end-of-turn."""

from __future__ import annotations

from collections.abc import Callable

import torch

from llm.settings_checks import check_sampling
from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.tokenizer import Tokenizer, render_prompt


def fit_prompt(tok: Tokenizer, messages: list[dict], block_size: int, max_new_tokens: int, system: str = "") -> list[int]:
    """The conversation rendered for a reply, dropping the oldest exchanges until the reply has room in the
    context (at least half of it); a single message still too long keeps its most recent tokens."""
    budget = block_size - min(max_new_tokens, block_size // 2)
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
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def reset(self) -> None:
        self.messages = []

    def prompt_ids(self) -> list[int]:
        return fit_prompt(self.tok, self.messages, self.model.config.block_size, self.max_new_tokens, self.system)

    def reply(self, text: str, on_token: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """The assistant's answer to `text`, streamed through `on_token`; whether it ended with <|end|>."""
        self.messages.append({"role": "user", "content": text})
        params = SamplingParams(self.max_new_tokens, self.temperature, self.top_k, 1.0, (self.tok.end_id, self.tok.eos_id))
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
