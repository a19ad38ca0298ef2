"""Text from tokens as they are generated, without splitting a multi-byte character across two tokens."""

from __future__ import annotations

from typing import TextIO

from llm.tokenizer import Tokenizer


class TextDecoder:
    """Turns a stream of token ids into pieces of text: each piece is new, whole characters only."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already handed out

    def add(self, token: int) -> str:
        """The text this token completes; "" while a character's bytes are still arriving."""
        if token in self.tokenizer.special_ids:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # a character whose bytes are still arriving
            return ""
        piece, self.emitted = text[self.emitted :], len(text)
        return piece

    def finish(self) -> str:
        """What is left when the stream ends (an unfinished character decodes as U+FFFD)."""
        text = self.tokenizer.decode(self.ids)
        piece, self.emitted = text[self.emitted :], len(text)
        return piece

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids)


class TokenPrinter:
    def __init__(self, tokenizer: Tokenizer, out: TextIO):
        self.decoder = TextDecoder(tokenizer)
        self.out = out

    def add(self, token: int) -> None:
        piece = self.decoder.add(token)
        if piece:
            self.out.write(piece)
            self.out.flush()

    def finish(self) -> str:
        self.out.write(self.decoder.finish() + "\n")
        self.out.flush()
        return self.decoder.text
