import pytest
import torch

from llm.config import ModelConfig
from llm.errors import ConfigError
from llm.model import GPT, model_size

VARIANTS = [
    dict(position="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=True),
    dict(position="learned", mlp="gelu", norm="layernorm", bias=True, tie_embeddings=False),
    dict(position="rope", mlp="gelu", norm="layernorm", bias=True, tie_embeddings=True),
    # GPT-2 as imported from transformers: its tanh GELU, and a hidden size and epsilon of its own
    dict(position="learned", mlp="gelu_tanh", norm="layernorm", bias=True, tie_embeddings=True, mlp_hidden=48, norm_eps=1e-3),
    dict(position="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=True, token_shift=True),
]


def build(cfg: ModelConfig) -> GPT:
    """The model, with a token shift that does something: it starts at zero, which would hide a wrong predecessor."""
    model = GPT(cfg)
    if model.shift is not None:
        torch.nn.init.normal_(model.shift.weight, std=0.5)
    return model


def small(**kw) -> ModelConfig:
    return ModelConfig(vocab_size=97, block_size=24, n_layer=2, n_head=2, n_embd=32, **kw)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_parameter_count(variant):
    cfg = small(**variant)
    model = GPT(cfg)
    logits = model(torch.randint(0, 97, (3, 24)))
    assert logits.shape == (3, 24, 97)
    assert model_size(cfg).params == model.num_params()
    assert (model.lm_head.weight is model.wte.weight) == variant["tie_embeddings"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality_future_token_does_not_change_past_logits(variant):
    torch.manual_seed(0)
    model = build(small(**variant)).eval()
    x = torch.randint(0, 97, (2, 20))
    y = x.clone()
    y[:, 12] = (y[:, 12] + 1) % 97
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_kv_cache_matches_full_forward(variant):
    torch.manual_seed(0)
    model = build(small(**variant)).eval()
    x = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2)
        parts = [model(x[:, :7], cache=cache)] + [model(x[:, t : t + 1], cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("token_shift", [False, True])
def test_left_padding_matches_unpadded_sequence(token_shift):
    torch.manual_seed(0)
    model = build(small(token_shift=token_shift)).eval()
    x = torch.randint(0, 97, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, :5] = False
    with torch.no_grad():
        padded = model(x, attention_mask=mask)
        alone = model(x[1:, 5:])
    torch.testing.assert_close(padded[1, 5:], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(padded).all()


def test_flops_grow_with_context_and_size():
    a = model_size(small())
    b = model_size(ModelConfig(vocab_size=97, block_size=48, n_layer=2, n_head=2, n_embd=32))
    c = model_size(ModelConfig(vocab_size=97, block_size=24, n_layer=4, n_head=2, n_embd=32))
    assert b.flops_per_token > a.flops_per_token and c.flops_per_token > a.flops_per_token
    assert a.flops_per_token >= 6 * a.non_embedding_params


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="model.norm"):
        GPT(small(norm="batchnorm"))
    with pytest.raises(ConfigError, match="divisible"):
        GPT(ModelConfig(vocab_size=10, n_embd=30, n_head=4))


def test_too_long_input_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        GPT(small())(torch.zeros(1, 25, dtype=torch.long))


def test_gelu_tanh_is_gpt2s_approximation_and_the_imported_sizes_reach_the_layers():
    model = GPT(small(position="learned", norm="layernorm", mlp="gelu_tanh", mlp_hidden=32, norm_eps=1e-3)).eval()  # no biases
    mlp = model.blocks[0].mlp
    with torch.no_grad():  # up and down as identities: the MLP is its activation alone
        mlp.up.weight.copy_(torch.eye(32))
        mlp.down.weight.copy_(torch.eye(32))
        x = torch.linspace(-3, 3, 32)
        by_hand = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
        assert torch.allclose(mlp(x), by_hand, atol=1e-6)
        assert (mlp(x) - torch.nn.functional.gelu(x)).abs().max() > 1e-4  # not the exact GELU
    assert model.blocks[0].norm1.eps == 1e-3 and model.norm_f.eps == 1e-3
    assert GPT(small()).norm_f.eps == 1e-6 and GPT(small(norm="layernorm")).norm_f.eps == 1e-5  # the defaults, unchanged


def test_token_shift_reads_the_previous_token_and_nothing_before_the_first():
    """The embedding at position t carries token t - 1 through the shift; position 0 (no predecessor) gets
    nothing added, and a cached decode step keeps the predecessor across calls."""
    torch.manual_seed(0)
    model = build(small(token_shift=True)).eval()
    x = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        plain = model.wte(x)
        shifted, _ = model.embed(x, torch.arange(6)[None], (torch.cat([x[:, :1], x[:, :-1]], 1), torch.arange(6)[None] > 0))
        assert torch.equal(shifted[:, 0], plain[:, 0]) and not torch.allclose(shifted[:, 1:], plain[:, 1:])
        cache = model.new_cache(1)
        model(x[:, :5], cache=cache)
        cache.write_slot.fill_(5)
        assert int(cache.last_token) == int(x[0, 4]) and bool(cache.last_valid)
        torch.testing.assert_close(model.decode_step(x[:, 5], cache), model(x)[:, -1], atol=1e-5, rtol=1e-5)
        assert int(cache.last_token) == int(x[0, 5])
