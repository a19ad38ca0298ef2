"""A GPT trunk with a scalar head: the reward model, and (read at every token) PPO's value model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from llm.generate import left_pad
from llm.model import GPT


class RewardModel(nn.Module):
    def __init__(self, trunk: GPT):
        super().__init__()
        self.trunk = trunk
        self.config = trunk.config
        self.head = nn.Linear(trunk.config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (trunk.config.n_embd + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """A score at every position (B, T); a sequence's reward is the score at its last real token."""
        hidden = self.trunk.hidden_states(input_ids, attention_mask)
        return self.head(hidden).squeeze(-1).float()


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, whether the padding is on the left or the right."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def sequence_rewards(model: RewardModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    scores = model(input_ids, attention_mask)
    return scores.gather(1, last_real_index(attention_mask)[:, None]).squeeze(1)


@torch.no_grad()
def score_sequences(model: RewardModel, sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64) -> list[float]:
    """Rewards of whole token sequences (prompt + reply), batched, without gradients."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        ids, mask = left_pad(sequences[start : start + batch_size], pad_id, device)
        out.extend(sequence_rewards(model, ids, mask).tolist())
    return out
