"""copy_losses: an oracle copier predicts the second copy exactly, a fresh model copies nothing."""

import numpy as np
import pytest
import torch
from torch import nn

from llm.config import ModelConfig
from llm.eval.copying import copy_losses, passages
from llm.model import GPT

VOCAB, LENGTH = 50, 6


class OracleCopier(nn.Module):
    """Uniform over the vocabulary, except where the token LENGTH back is known: there it is certain of it."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        logits = torch.zeros(*ids.shape, VOCAB)
        for j in range(LENGTH - 1, ids.shape[1]):
            logits[:, j].scatter_(1, ids[:, j + 1 - LENGTH, None], 100.0)
        return logits


def test_an_oracle_copier_predicts_only_the_second_copy():
    rows = torch.randint(0, VOCAB, (4, LENGTH))
    first, second = copy_losses(OracleCopier(), rows)
    assert first == pytest.approx(np.log(VOCAB), rel=1e-4) and second == pytest.approx(0.0, abs=1e-6)


def test_a_fresh_model_gains_nothing_from_the_repeat():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=VOCAB, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    first, second = copy_losses(model, torch.randint(0, VOCAB, (8, 10)))
    assert abs(first - second) < 0.1 and first > 3.0


def test_passages_are_consecutive_and_as_many_as_fit():
    rows = passages(np.arange(100), count=64, length=30)
    assert rows.shape == (3, 30) and rows[1, 0] == 30 and rows[2, -1] == 89
