"""Whether a language model copies: its loss on a passage written a second time, against the first time.

A model with an induction head (find where the current token occurred before, predict the token that
followed it) predicts the second copy of a passage almost exactly, whatever the passage; one without
predicts it about as badly as the first. Copying a word it was never trained on, token by token, takes
that circuit, so pre-training reports `copy_gain`: the first copy's loss minus the second's, in nats per
token (docs/design.md, "Skills, not a word list").
"""

from __future__ import annotations

import numpy as np
import torch

from llm.losses import IGNORE, token_nll

PASSAGES, PASSAGE_TOKENS = 64, 30


def passages(tokens: np.ndarray, count: int = PASSAGES, length: int = PASSAGE_TOKENS) -> torch.Tensor:
    """`count` consecutive passages of `length` tokens from the start of `tokens` (fewer when it is short)."""
    count = min(count, len(tokens) // length)
    return torch.from_numpy(np.asarray(tokens[: count * length], dtype=np.int64).reshape(count, length))


@torch.no_grad()
def copy_losses(model, passages: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss (nats) over the first copy and over the second, each passage written twice in a row.

    The first token of each copy is left out of both: nothing before it says what it is.
    """
    twice = torch.cat([passages, passages], dim=1).to(next(model.parameters()).device)
    length = passages.shape[1]
    inputs, targets = twice[:, :-1], twice[:, 1:].clone()
    first, second = targets.clone(), targets.clone()
    first[:, length - 1 :] = IGNORE
    second[:, :length] = IGNORE
    logits = model(inputs)
    nats_first, count_first = token_nll(logits, first)
    nats_second, count_second = token_nll(logits, second)
    return float(nats_first) / count_first, float(nats_second) / count_second
