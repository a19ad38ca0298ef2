"""A multi-turn chat session: history kept within the context, replies streamed, stop at end-of-turn."""

from __future__ import annotations

from collections.abc import Callable

import torch

from llm.settings_checks import check_sampling
from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.tokenizer import Tokenizer, render_prompt


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
        """The conversation so far, dropping the oldest exchanges until the reply has room in the context."""
        budget = self.model.config.block_size - min(self.max_new_tokens, self.model.config.block_size // 2)
        history = list(self.messages)
        while True:
            system = [{"role": "system", "content": self.system}] if self.system else []
            ids = render_prompt(self.tok, system + history)
            if len(ids) <= budget or len(history) <= 1:
                return ids[-budget:]
            history = history[2:] if len(history) > 2 else history[1:]

    def reply(self, text: str, on_token: Callable[[int], None] | None = None) -> tuple[str, bool]:
        """The assistant's answer to `text`, streamed through `on_token`; whether it ended with <|end|>."""
        self.messages.append({"role": "user", "content": text})
        params = SamplingParams(self.max_new_tokens, self.temperature, self.top_k, 1.0, (self.tok.end_id, self.tok.eos_id))
        out = generate(self.model, [self.prompt_ids()], params, self.tok.pad_id, generator=self.generator,
                       on_token=(lambda row, token: on_token(token)) if on_token else None)
        answer = self.tok.decode(out.tokens[0])
        self.messages.append({"role": "assistant", "content": answer})
        return answer, out.finished[0]
