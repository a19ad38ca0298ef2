import pytest
import torch
import torch.nn as nn

from llm.config import ModelConfig, OptimConfig
from llm.model import GPT
from llm.train.optim import build_optimizer, lr_at, param_groups


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = GPT(ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=True, norm="layernorm", position="learned"))
    decay, no_decay = param_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[i].endswith("weight") and "norm" not in names[i] and "wte" not in names[i] and "wpe" not in names[i] for i in decayed)
    assert id(model.wte.weight) not in decayed and id(model.blocks[0].attn.qkv.weight) in decayed
    assert no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_cosine_warmup_and_floor():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, schedule="cosine")
    lrs = [lr_at(s, cfg, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)


def test_warmup_stable_decay():
    cfg = OptimConfig(lr=1.0, min_lr_ratio=0.0, warmup_steps=5, schedule="wsd", decay_fraction=0.2)
    assert lr_at(50, cfg, 100) == 1.0 and lr_at(79, cfg, 100) == 1.0
    assert lr_at(90, cfg, 100) == pytest.approx(0.5) and lr_at(100, cfg, 100) == pytest.approx(0.0)


def test_fused_is_a_choice():
    model = GPT(ModelConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16))
    opt = build_optimizer(model, OptimConfig(fused=True), torch.device("cpu"))
    assert opt.defaults["fused"] is True
    opt = build_optimizer(model, OptimConfig(fused=False), torch.device("cpu"))
    assert not opt.defaults["fused"] and opt.defaults["foreach"]


def newton_schulz_by_hand(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration, written out: X <- aX + (bA + cA^2)X with A = XX^T, on the
    wide orientation, starting from X / ||X||_F."""
    a, b, c = 3.4445, -4.775, 2.0315
    x = matrix.double()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).float()


def test_muon_orthogonalises_the_blocks_matrices_and_adamw_takes_the_rest():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(5, 3)
            self.blocks = nn.ModuleList([nn.Linear(3, 4, bias=False)])
            self.norm = nn.LayerNorm(3)

    torch.manual_seed(0)
    model = Tiny()
    cfg = OptimConfig(name="muon", lr=1e-3, muon_lr=0.02, muon_momentum=0.95, muon_weight_decay=0.0, weight_decay=0.0)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    matrix = model.blocks[0].weight
    assert [len(g["params"]) for g in opt.muon.param_groups] == [1] and opt.muon.param_groups[0]["params"][0] is matrix
    assert sum(len(g["params"]) for g in opt.adamw.param_groups) == 3  # embedding, norm weight and bias
    assert [g.get("lr_scale", 1.0) for g in opt.param_groups] == [1.0, 20.0]  # AdamW's one group (no decay), Muon's
    before, embedding_before = matrix.detach().clone(), model.wte.weight.detach().clone()
    grad = torch.randn(4, 3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    matrix.grad = grad.clone()
    opt.step()
    # first step, Nesterov momentum: the update direction is NS(g + 0.95 g); a (4, 3) matrix's step is
    # scaled by sqrt(max(1, 4/3)) (Keller Jordan's original rule, torch's default)
    expected = before - 0.02 * (4 / 3) ** 0.5 * newton_schulz_by_hand(1.95 * grad)
    torch.testing.assert_close(matrix.detach(), expected, atol=1e-6, rtol=1e-5)  # fp32: the loop's dtype here
    singular = torch.linalg.svdvals(newton_schulz_by_hand(grad))
    assert singular.min() > 0.6 and singular.max() < 1.25  # near-orthogonal: every direction moves about alike
    assert not torch.equal(model.wte.weight, embedding_before)
    state = opt.state_dict()
    assert set(state) == {"adamw", "muon"}
    again = build_optimizer(model, cfg, torch.device("cpu"))
    again.load_state_dict(state)
    torch.testing.assert_close(again.muon.state_dict()["state"][0]["momentum_buffer"], 0.05 * grad)  # an average: (1 - 0.95) g


def test_muon_is_refused_for_a_model_without_block_matrices():
    from llm.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.name=muon"):
        build_optimizer(nn.Linear(3, 3), OptimConfig(name="muon"), torch.device("cpu"))
