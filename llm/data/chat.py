"""Conversations as training examples: render with the chat template, cut at turn boundaries, collate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm.data.batching import pad_right
from llm.data.styles import pick_style, styled
from llm.data.tasks import Task
from llm.losses import IGNORE  # targets that carry no loss: prompts, role headers, padding
from llm.tokenizer import Tokenizer, render_turns


@dataclass(frozen=True)
class ChatExample:
    ids: list[int]
    mask: list[bool]  # true where the next-token loss applies (assistant replies and their <|end|>)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ChatStats:
    conversations: int = 0
    truncated: int = 0  # cut at a turn boundary to fit the context
    dropped_too_long: int = 0  # not even the first assistant reply fits


def task_conversation(task: Task, style_weights: Sequence[float] | None = None) -> list[dict]:
    """The task as a demonstration: its answer, written in a style drawn from `style_weights` (plain when None)."""
    answer = styled(task.answer, *pick_style(task.prompt, style_weights)) if style_weights else task.answer
    return [{"role": "user", "content": task.prompt}, {"role": "assistant", "content": answer}]


def tokenize_conversation(tok: Tokenizer, messages: Sequence[dict], max_len: int) -> tuple[ChatExample | None, bool]:
    """The longest prefix of whole turns that fits in `max_len` tokens and ends with an assistant reply.

    Returns (example or None when no assistant reply fits, whether turns were cut off).
    """
    ids, mask = [tok.bos_id], [False]
    turns = render_turns(tok, messages)
    kept = 0
    for turn_ids, turn_mask in turns:
        if len(ids) + len(turn_ids) > max_len:
            break
        ids, mask, kept = ids + turn_ids, mask + turn_mask, kept + 1
    while kept and messages[kept - 1]["role"] != "assistant":  # a trailing question without its answer teaches nothing
        kept -= 1
        ids, mask = ids[: len(ids) - len(turns[kept][0])], mask[: len(mask) - len(turns[kept][1])]
    if not any(mask):
        return None, True
    return ChatExample(ids, mask), kept < len(turns)


def tokenize_conversations(tok: Tokenizer, conversations: Sequence[Sequence[dict]], max_len: int) -> tuple[list[ChatExample], ChatStats]:
    stats = ChatStats(conversations=len(conversations))
    examples = []
    for messages in conversations:
        example, truncated = tokenize_conversation(tok, messages, max_len)
        if example is None:
            stats.dropped_too_long += 1
            continue
        stats.truncated += truncated
        examples.append(example)
    return examples, stats


def collate_chat(examples: Sequence[ChatExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded inputs and next-token targets; padding and unlearned positions are IGNORE.

    Padding sits after the real tokens, so causal attention never lets it influence them and no
    attention mask is needed (attention keeps its fast is_causal path).
    """
    ids = pad_right([e.ids for e in examples], pad_id)
    learn = pad_right([[int(m) for m in e.mask] for e in examples], 0).bool()
    targets = ids[:, 1:].masked_fill(~learn[:, 1:], IGNORE)
    return {"input_ids": ids[:, :-1], "targets": targets}
