"""Activation checkpointing: the same gradients from fewer activations kept for backward."""

import torch

from llm.config import ModelConfig
from llm.model import GPT
from llm.train.activation_checkpointing import apply_activation_checkpointing


def saved_bytes_and_grads(model: GPT, ids: torch.Tensor) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes autograd keeps for backward during the forward pass, and the gradients backward then gives."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids).float().logsumexp(-1).mean()
    total = sum(saved)
    loss.backward()
    return total, {name: p.grad.clone() for name, p in model.named_parameters()}


def test_checkpointed_blocks_keep_less_and_give_the_same_gradients():
    torch.manual_seed(0)
    model = GPT(ModelConfig(block_size=64, n_layer=4, n_head=4, n_embd=64, vocab_size=256, dropout=0.0))
    ids = torch.randint(0, 256, (4, 64))
    plain_bytes, plain_grads = saved_bytes_and_grads(model, ids)
    names = [name for name, _ in model.named_parameters()]
    assert apply_activation_checkpointing(model) == 4
    assert [name for name, _ in model.named_parameters()] == names  # checkpoints and FSDP see the same names
    kept_bytes, grads = saved_bytes_and_grads(model, ids)
    assert kept_bytes < plain_bytes / 2
    assert all(torch.allclose(grads[k], plain_grads[k], atol=1e-6, rtol=1e-5) for k in names)


def test_evaluation_runs_the_blocks_once():
    torch.manual_seed(0)
    model = GPT(ModelConfig(block_size=32, n_layer=2, n_head=2, n_embd=32, vocab_size=128))
    ids = torch.randint(0, 128, (2, 32))
    with torch.no_grad():
        before = model(ids)
    apply_activation_checkpointing(model)
    with torch.no_grad():
        assert torch.equal(model(ids), before)
