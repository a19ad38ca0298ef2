"""Which transformers architecture a ModelConfig is, and back: the settings of each side, and what is refused.

Our default block (rotary positions, RMSNorm, SwiGLU) is Llama; the classic block (learned positions,
LayerNorm, GELU) is GPT-2. A mix of the two (rotary with LayerNorm, say) has no transformers class that
computes it, so it is refused with the option at fault named, never exported as something close. Biases map
exactly: Llama's attention_bias and mlp_bias together are our `bias`; GPT-2 always has biases, and a model
without them exports with zeros there. Dropout is a training setting and is not carried (0 in the export).
"""

from __future__ import annotations

from llm.config import ModelConfig
from llm.errors import CheckpointError, ConfigError
from llm.model import mlp_hidden, norm_eps

SUPPORTED = ("gpt2", "llama")
# what the architecture each position kind exports as needs of the other block options
BLOCKS = {
    "llama": {"position": ("rope",), "norm": ("rmsnorm",), "mlp": ("swiglu",)},
    "gpt2": {"position": ("learned",), "norm": ("layernorm",), "mlp": ("gelu", "gelu_tanh")},
}
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}  # theirs -> our mlp


def architecture_of(cfg: ModelConfig) -> str:
    """llama or gpt2, or a one-line error naming the option that has no exact transformers equivalent."""
    architecture = "llama" if cfg.position == "rope" else "gpt2"
    if cfg.token_shift:
        raise ConfigError("model.token_shift=true has no transformers equivalent (neither Llama nor GPT-2 adds the previous "
                          "token's embedding): export a model trained with model.token_shift=false")
    for option, allowed in BLOCKS[architecture].items():
        value = getattr(cfg, option)
        if value not in allowed:
            raise ConfigError(f"model.{option}={value} has no transformers equivalent with model.position={cfg.position}: "
                              f"{architecture} needs model.{option}={' or '.join(allowed)} (the default block is rope, rmsnorm, "
                              f"swiglu; the classic one learned, layernorm, gelu)")
    return architecture


def transformers_config(cfg: ModelConfig, architecture: str, token_ids: dict[str, int]) -> dict:
    """The keyword arguments of LlamaConfig or GPT2Config that compute what `cfg` computes."""
    if architecture == "llama":
        return dict(
            vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=mlp_hidden(cfg), num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head, head_dim=cfg.n_embd // cfg.n_head, hidden_act="silu",
            max_position_embeddings=cfg.block_size, rms_norm_eps=norm_eps(cfg), rope_theta=cfg.rope_theta,
            attention_bias=cfg.bias, mlp_bias=cfg.bias, attention_dropout=0.0, tie_word_embeddings=cfg.tie_embeddings, **token_ids,
        )
    return dict(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        n_inner=mlp_hidden(cfg), activation_function="gelu_pytorch_tanh" if cfg.mlp == "gelu_tanh" else "gelu",
        layer_norm_epsilon=norm_eps(cfg), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        tie_word_embeddings=cfg.tie_embeddings, **token_ids,
    )


def model_config_from(config, where: str) -> ModelConfig:
    """Our ModelConfig for a transformers config, or a one-line error naming the setting we cannot compute."""
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED:
        raise CheckpointError(f"{where}: a {model_type} model; hf: imports the architectures {', '.join(SUPPORTED)}")
    return llama_model_config(config, where) if model_type == "llama" else gpt2_model_config(config, where)


def refuse(where: str, key: str, value, need: str) -> CheckpointError:
    return CheckpointError(f"{where}: config.json has {key}={value!r}, which this project's model does not compute (it needs {need})")


def rope_settings(config) -> tuple[float, str]:
    """Rope theta and type, from transformers 5's rope_parameters or 4's rope_theta and rope_scaling."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    return float(theta), params.get("rope_type", params.get("type", "default"))


def llama_model_config(config, where: str) -> ModelConfig:
    hidden, heads = config.hidden_size, config.num_attention_heads
    theta, rope_type = rope_settings(config)
    checks = [
        ("hidden_act", config.hidden_act, "silu", config.hidden_act == "silu"),
        ("rope_type", rope_type, "default", rope_type == "default"),
        ("head_dim", getattr(config, "head_dim", None), hidden // heads, getattr(config, "head_dim", None) in (None, hidden // heads)),
        ("mlp_bias", getattr(config, "mlp_bias", False), f"mlp_bias = attention_bias ({config.attention_bias})",
         getattr(config, "mlp_bias", False) == config.attention_bias),
    ]
    for key, value, need, ok in checks:
        if not ok:
            raise refuse(where, key, value, need)
    return ModelConfig(
        vocab_size=config.vocab_size, block_size=config.max_position_embeddings, n_layer=config.num_hidden_layers, n_head=heads,
        n_embd=hidden, bias=config.attention_bias, norm="rmsnorm", norm_eps=config.rms_norm_eps, mlp="swiglu",
        mlp_hidden=config.intermediate_size, position="rope", rope_theta=theta, tie_embeddings=config.tie_word_embeddings,
    )


def gpt2_model_config(config, where: str) -> ModelConfig:
    checks = [
        ("activation_function", config.activation_function, " or ".join(GPT2_ACTIVATIONS), config.activation_function in GPT2_ACTIVATIONS),
        ("scale_attn_weights", config.scale_attn_weights, True, config.scale_attn_weights),
        ("scale_attn_by_inverse_layer_idx", config.scale_attn_by_inverse_layer_idx, False, not config.scale_attn_by_inverse_layer_idx),
        ("add_cross_attention", config.add_cross_attention, False, not config.add_cross_attention),
    ]
    for key, value, need, ok in checks:
        if not ok:
            raise refuse(where, key, value, need)
    return ModelConfig(
        vocab_size=config.vocab_size, block_size=config.n_positions, n_layer=config.n_layer, n_head=config.n_head,
        n_embd=config.n_embd, bias=True, norm="layernorm", norm_eps=config.layer_norm_epsilon,
        mlp=GPT2_ACTIVATIONS[config.activation_function], mlp_hidden=config.n_inner or 4 * config.n_embd, position="learned",
        tie_embeddings=config.tie_word_embeddings,
    )
