"""Held-out replies: under torchrun the processes split the prompts and share the replies in order."""

import torch

from llm.config import ModelConfig
from llm.distributed import DistInfo, my_block
from llm.eval import tasks as eval_tasks
from llm.model import GPT

PROMPTS = [f"Say {word} {n} times." for n, word in enumerate("red green blue cat dog sun moon".split(), start=1)]


def random_model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():  # larger weights than a fresh model's, so that greedy replies depend on the prompt
        for param in model.parameters():
            param.mul_(20)
    return model


def test_blocks_cover_the_items_once_in_order():
    for n in (0, 1, 5, 7, 41):
        for world in (1, 2, 3, 8):
            blocks = [my_block(n, DistInfo(rank, world)) for rank in range(world)]
            assert [i for block in blocks for i in block] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_processes_reply_to_their_blocks_and_share_the_replies_in_prompt_order(tokenizer, monkeypatch):
    model = random_model(tokenizer.vocab_size)
    alone = eval_tasks.greedy_replies(model, tokenizer, PROMPTS, 6)
    assert len({tuple(r.tokens) for r in alone}) > 1  # the replies differ, so their order can be checked
    # three processes, the gather played by hand: each process's replies, concatenated in rank order
    shares = []
    monkeypatch.setattr(eval_tasks, "gather_lists", lambda items, dist: shares.append(items) or items)
    for rank in range(3):
        eval_tasks.greedy_replies(model, tokenizer, PROMPTS, 6, DistInfo(rank, 3))
    assert [len(s) for s in shares] == [2, 2, 3]
    assert [r.tokens for share in shares for r in share] == [r.tokens for r in alone]
