"""Byte-level BPE (the `tokenizers` library), its special tokens, and the chat template.

The special tokens are reserved at pre-training so later stages find them in place: documents are
framed as <|bos|> text <|eos|>, and a conversation renders as

    <|bos|><|user|>question<|end|><|assistant|>answer<|end|>

where <|end|> closes every turn. The loss mask of a rendered conversation is true on assistant
content and on the <|end|> that closes the assistant turn, so a fine-tuned model learns to stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from llm.errors import DataError
from llm.run_files import write_text

BOS, EOS, PAD, END = "<|bos|>", "<|eos|>", "<|pad|>", "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = (BOS, EOS, PAD, *ROLE_TOKENS.values(), END)
# every byte and every special token has an id of its own; merges come on top (the trainer silently
# grows a smaller vocab_size to this)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


class Tokenizer:
    """A trained byte-level BPE with the project's special tokens."""

    def __init__(self, backend: HFTokenizer):
        self.backend = backend
        ids = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise DataError(f"tokenizer lacks the special tokens {missing}; train it with llm.tokenizer.train")
        self.bos_id, self.eos_id, self.pad_id, self.end_id = ids[BOS], ids[EOS], ids[PAD], ids[END]
        self.role_ids = {role: ids[token] for role, token in ROLE_TOKENS.items()}
        self.special_ids = frozenset(ids.values())

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def token_byte_lengths(self) -> list[int]:
        """UTF-8 bytes each token id stands for (0 for special tokens): the denominator of bits per byte."""
        lengths = []
        for i in range(self.vocab_size):
            lengths.append(0 if i in self.special_ids else len(self.decode([i], skip_special=False).encode("utf-8", "surrogatepass")))
        return lengths

    def save(self, path: str | Path) -> None:
        write_text(Path(path), self.to_json())

    def to_json(self) -> str:
        return self.backend.to_str()

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: tokenizer file not found")
        try:
            backend = HFTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception on a malformed file
            raise DataError(f"{path}: not a valid tokenizer file ({str(exc).splitlines()[0]})") from None
        return cls(backend)


def train(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE: every byte is in the base alphabet, so no text is ever out of vocabulary."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 byte tokens + {len(SPECIAL_TOKENS)} special tokens); "
                         f"got {vocab_size}")
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend)


def bytes_per_token(tokenizer: Tokenizer, texts: Sequence[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return n_bytes / max(n_tokens, 1)


# --- the chat template ---------------------------------------------------------------------------


def render_conversation(tok: Tokenizer, messages: Sequence[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of a whole conversation and its loss mask (true on assistant replies and their <|end|>)."""
    ids, mask = [tok.bos_id], [False]
    for turn_ids, turn_mask in render_turns(tok, messages):
        ids += turn_ids
        mask += turn_mask
    return ids, mask


def render_turns(tok: Tokenizer, messages: Sequence[dict], last_complete: bool = True) -> list[tuple[list[int], list[bool]]]:
    """Each turn's ids and mask, so callers can cut a conversation at a turn boundary.

    With `last_complete=False` the final turn is left open (no <|end|>): a reply that never stopped.
    """
    turns = []
    for n, message in enumerate(messages):
        role = message["role"]
        if role not in tok.role_ids:
            raise DataError(f"unknown role {role!r} in a conversation (system, user, assistant)")
        content = tok.encode(message["content"])
        closed = last_complete or n < len(messages) - 1
        body = content + ([tok.end_id] if closed else [])
        learn = role == "assistant"
        turns.append(([tok.role_ids[role]] + body, [False] + [learn] * len(body)))
    return turns


def render_prompt(tok: Tokenizer, messages: Sequence[dict]) -> list[int]:
    """The ids a model continues to write the next assistant turn: the conversation, then <|assistant|>."""
    ids, _ = render_conversation(tok, messages)
    return ids + [tok.role_ids["assistant"]]
