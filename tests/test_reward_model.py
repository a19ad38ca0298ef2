import torch

from llm.config import ModelConfig
from llm.model import GPT
from llm.reward_model import RewardModel, last_real_index, score_sequences, sequence_rewards


def model():
    torch.manual_seed(0)
    return RewardModel(GPT(ModelConfig(vocab_size=40, block_size=32, n_layer=2, n_head=2, n_embd=32))).eval()


def test_score_is_read_at_the_last_real_token_whatever_the_padding():
    rm = model()
    seq = [1, 5, 9, 3, 7]
    alone = sequence_rewards(rm, torch.tensor([seq]), torch.ones(1, 5, dtype=torch.bool))
    right = torch.tensor([seq + [0, 0, 0]])
    right_mask = torch.tensor([[True] * 5 + [False] * 3])
    left = torch.tensor([[0, 0, 0] + seq])
    left_mask = torch.tensor([[False] * 3 + [True] * 5])
    with torch.no_grad():
        torch.testing.assert_close(sequence_rewards(rm, right, right_mask), alone)
        torch.testing.assert_close(sequence_rewards(rm, left, left_mask), alone, atol=1e-5, rtol=1e-5)
        # a different last token changes the score: it is not read at padding
        other = sequence_rewards(rm, torch.tensor([seq[:-1] + [8] + [0, 0, 0]]), right_mask)
    assert not torch.allclose(other, alone)


def test_last_real_index_on_both_sides():
    mask = torch.tensor([[True, True, False], [False, True, True], [True, False, False]])
    assert last_real_index(mask).tolist() == [1, 2, 0]


def test_batch_scoring_matches_one_at_a_time():
    rm = model()
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    batched = score_sequences(rm, seqs, pad_id=0, batch_size=2)
    single = [score_sequences(rm, [s], pad_id=0)[0] for s in seqs]
    torch.testing.assert_close(torch.tensor(batched), torch.tensor(single), atol=1e-5, rtol=1e-5)
