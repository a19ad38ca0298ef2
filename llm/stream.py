"""Print tokens as they are generated, without splitting a multi-byte character across two tokens."""

from __future__ import annotations

from typing import TextIO

from llm.tokenizer import Tokenizer


class TokenPrinter:
    def __init__(self, tokenizer: Tokenizer, out: TextIO):
        self.tokenizer = tokenizer
        self.out = out
        self.ids: list[int] = []
        self.printed = 0  # characters of the decoded text already written

    def add(self, token: int) -> None:
        if token in self.tokenizer.special_ids:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # a character whose bytes are still arriving
            return
        self.out.write(text[self.printed :])
        self.out.flush()
        self.printed = len(text)

    def finish(self) -> str:
        text = self.tokenizer.decode(self.ids)
        self.out.write(text[self.printed :] + "\n")
        self.out.flush()
        return text
