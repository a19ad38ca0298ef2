import pytest
import torch

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
