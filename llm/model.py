"""A decoder-only GPT: attention through scaled_dot_product_attention, pre-norm blocks, a KV cache.

`forward` takes optional `attention_mask` (B, T) marking real tokens (False = padding) so that batches
of left-padded prompts generate correctly: positions count real tokens only and padded keys are never
attended to. Without a mask and without a cache, attention runs with `is_causal=True`, which lets CUDA
pick the flash kernel.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llm.config import ModelConfig


def make_dropout(p: float) -> nn.Module:
    # at p = 0 a Dropout module still adds an op and an autograd node per call; at tiny shapes that shows
    return nn.Dropout(p) if p > 0 else nn.Identity()


def norm_eps(cfg: ModelConfig) -> float:
    if cfg.norm_eps:
        return cfg.norm_eps
    return 1e-6 if cfg.norm == "rmsnorm" else 1e-5


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.n_embd, eps=norm_eps(cfg))
    return nn.LayerNorm(cfg.n_embd, eps=norm_eps(cfg), bias=cfg.bias)


def swiglu_hidden(n_embd: int) -> int:
    # 2/3 of 4x keeps the parameter count of a GELU MLP (LLaMA); rounded up to a multiple of 64
    return 64 * math.ceil(int(8 * n_embd / 3) / 64)


def mlp_hidden(cfg: ModelConfig) -> int:
    if cfg.mlp_hidden:
        return cfg.mlp_hidden  # an imported model's own size (TinyLlama's 5,632 is not 8/3 of 2,048 rounded)
    return swiglu_hidden(cfg.n_embd) if cfg.mlp == "swiglu" else 4 * cfg.n_embd


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        # GPT-2 was trained with the tanh approximation of GELU; its weights are imported with it
        self.approximate = "tanh" if cfg.mlp == "gelu_tanh" else "none"
        hidden = mlp_hidden(cfg)
        self.up = nn.Linear(cfg.n_embd, hidden * (2 if self.gated else 1), bias=cfg.bias)
        self.down = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = make_dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h, approximate=self.approximate)
        return self.dropout(self.down(h))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1, x2) of the two halves of each head; cos/sin are (B, 1, T, head_dim/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class KVCache:
    """Keys and values of every layer for a batch being generated, preallocated to `max_len`."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device, dtype):
        head_dim = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.key_valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)
        # where decode_step writes next: a tensor mirror of `length`, so a replayed CUDA graph reads it afresh
        self.write_slot = torch.zeros(1, dtype=torch.long, device=device)
        self.length = 0
        self.max_len = max_len
        self.padded = False  # whether any key so far is padding, which needs an explicit mask
        # the token before the next one, for model.token_shift; last_valid is False where there is none yet
        self.last_token = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.last_valid = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def reset(self) -> None:
        """Empty the cache in place: a CUDA graph captured over these buffers stays valid."""
        self.key_valid.zero_()
        self.next_position.zero_()
        self.write_slot.zero_()
        self.last_valid.zero_()
        self.length = 0
        self.padded = False

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep only `rows` of the batch (in that order), e.g. after some sequences finished."""
        self.keys = self.keys[:, rows]
        self.values = self.values[:, rows]
        self.key_valid = self.key_valid[rows]
        self.next_position = self.next_position[rows]
        self.last_token = self.last_token[rows]
        self.last_valid = self.last_valid[rows]


class SlotWrites:
    """The decode step's view of a cache: each layer's new key and value land in the slot `write_slot`
    names, and attention reads the whole fixed-size buffer (the validity mask hides the empty slots)."""

    def __init__(self, cache: KVCache):
        self.cache = cache

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        keys.index_copy_(2, self.cache.write_slot, k)
        values.index_copy_(2, self.cache.write_slot, v)
        return keys, values


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = make_dropout(cfg.dropout)

    def forward(self, x, rope, mask, cache: KVCache | SlotWrites | None, layer: int) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        if mask is None:
            # without a mask: causal over the whole sequence, or (one new token) all cached keys
            causal = cache is None or T > 1
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = Attention(cfg)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope, mask, cache, layer):
        x = x + self.attn(self.norm1(x), rope, mask, cache, layer)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.position == "learned" else None
        self.drop = make_dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.shift = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False) if cfg.token_shift else None
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        if cfg.position == "rope":
            self.register_buffer("rope_inv_freq", rope_frequencies(cfg), persistent=False)
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                # GPT-2: residual projections scaled so the residual stream's variance does not grow with depth
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if self.shift is not None:
            nn.init.zeros_(self.shift.weight)  # starts as the plain model; the gradient still reaches it

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, attention_mask=None, cache: KVCache | None = None, logits_at: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids `idx` (B, T); with a (B, T) boolean `logits_at`, only the
        (N, vocab) logits of the positions it marks: the head over a 4,096-token vocabulary is a third
        of the tiny model's forward pass, and SFT needs it only at the reply's few tokens."""
        hidden = self.hidden_states(idx, attention_mask, cache)
        return self.lm_head(hidden if logits_at is None else hidden[logits_at])

    def hidden_states(self, idx, attention_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        """The final normed hidden states (B, T, n_embd): what the LM, reward and value heads read."""
        B, T = idx.shape
        positions = token_positions(idx, attention_mask, cache)
        if cache is None and T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than model.block_size={self.config.block_size}")
        mask = attention_bias(attention_mask, cache, T, idx.device)
        x, rope = self.embed(idx, positions, previous_tokens(idx, attention_mask, cache) if self.shift is not None else None)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, layer)
        if cache is not None:
            cache.length += T
        return self.norm_f(x)

    def embed(self, idx: torch.Tensor, positions: torch.Tensor,
              previous: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, tuple | None]:
        """Token embeddings (with model.token_shift, plus a learned map of the previous token's, where
        `previous` = (ids, valid) has one) plus learned positions, or the rotary tables the attention applies."""
        x = self.wte(idx)
        if previous is not None:
            prev_ids, valid = previous
            x = x + self.shift(self.wte(prev_ids)) * valid[..., None].to(x.dtype)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions.clamp(max=self.config.block_size - 1))
        else:
            rope = rope_tables(self.rope_inv_freq, positions, x.dtype)
        return self.drop(x), rope

    def decode_step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, vocab) after one more token (B,) per row, with no shape and no Python number that
        changes from token to token: attention runs over the whole buffer under the validity mask, and the
        write slot and positions are tensors advanced in place, so a CUDA graph of one call replays for
        every token. The caller keeps `cache.length` (the host's count) in step."""
        cache.key_valid.index_fill_(1, cache.write_slot, True)
        previous = previous_tokens(token[:, None], None, cache) if self.shift is not None else None
        x, rope = self.embed(token[:, None], cache.next_position[:, None], previous)
        mask = cache.key_valid[:, None, None, :]  # (B, 1, 1, max_len): the prompt's padding and empty slots stay out
        writes = SlotWrites(cache)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, mask, writes, layer)
        cache.next_position += 1
        cache.write_slot += 1
        return self.lm_head(self.norm_f(x))[:, -1]

    def num_params(self, include_embeddings: bool = True) -> int:
        total = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            total -= self.wte.weight.numel()
            if self.wpe is not None:
                total -= self.wpe.weight.numel()
        return total

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        param = self.wte.weight
        dtype = torch.get_autocast_dtype(param.device.type) if torch.is_autocast_enabled(param.device.type) else param.dtype
        return KVCache(self.config, batch_size, max_len or self.config.block_size, param.device, dtype)


def rope_frequencies(cfg: ModelConfig) -> torch.Tensor:
    head_dim = cfg.n_embd // cfg.n_head
    return 1.0 / (cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_tables(inv_freq: torch.Tensor, positions: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    angles = positions[:, None, :, None].float() * inv_freq  # (B, 1, T, head_dim/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def token_positions(idx, attention_mask, cache: KVCache | None) -> torch.Tensor:
    """Position of each token among the real tokens of its row (padding does not advance it)."""
    B, T = idx.shape
    if attention_mask is None:
        offset = cache.next_position[:, None] if cache is not None else 0
        positions = torch.arange(T, device=idx.device)[None, :] + offset
        positions = positions.expand(B, T)
    else:
        mask = attention_mask.long()
        offset = cache.next_position[:, None] if cache is not None else 0
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0) + offset
    if cache is not None:
        added = attention_mask.sum(dim=1) if attention_mask is not None else T
        cache.next_position += added  # in place: a captured decode step reads this very tensor
    return positions


def previous_tokens(idx, attention_mask, cache: KVCache | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's predecessor (B, T) and whether it has a real one: not at the start of the sequence (or of
    the cache), not after padding. With a cache, the last token is kept for the next call."""
    B, T = idx.shape
    real = attention_mask.bool() if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=idx.device)
    if cache is None:
        first_ids, first_valid = idx.new_zeros(B, 1), real.new_zeros(B, 1)
    else:
        first_ids, first_valid = cache.last_token[:, None].clone(), cache.last_valid[:, None].clone()
        cache.last_token.copy_(idx[:, -1])
        cache.last_valid.copy_(real[:, -1])
    return torch.cat([first_ids, idx[:, :-1]], dim=1), torch.cat([first_valid, real[:, :-1]], dim=1)


def attention_bias(attention_mask, cache: KVCache | None, T: int, device) -> torch.Tensor | None:
    """A boolean (B, 1, T, keys) mask where padding or a cache needs one, else None (plain causal)."""
    if cache is not None:
        start = cache.length
        valid = attention_mask if attention_mask is not None else torch.ones(cache.key_valid.shape[0], T, dtype=torch.bool, device=device)
        cache.key_valid[:, start : start + T] = valid
        cache.padded = cache.padded or not bool(valid.all())
        if not cache.padded:
            return None if T == 1 or start == 0 else causal_mask(start, T, device)[None, None]
        keys = cache.key_valid[:, : start + T]
        allowed = causal_mask(start, T, device)[None] & keys[:, None, :]
    else:
        if attention_mask is None or bool(attention_mask.all()):
            return None
        start = 0
        allowed = causal_mask(0, T, device)[None] & attention_mask[:, None, :]
    # a padded query would see no key at all and give NaN: let every query see itself
    allowed = allowed | diagonal_mask(start, T, device)[None]
    return allowed[:, None]


def causal_mask(start: int, T: int, device) -> torch.Tensor:
    """(T, start+T): query i (at absolute position start+i) may see keys 0..start+i."""
    keys = torch.arange(start + T, device=device)
    queries = torch.arange(start, start + T, device=device)
    return keys[None, :] <= queries[:, None]


def diagonal_mask(start: int, T: int, device) -> torch.Tensor:
    """(T, start+T): true where query i meets its own key at absolute position start+i."""
    keys = torch.arange(start + T, device=device)
    queries = torch.arange(start, start + T, device=device)
    return keys[None, :] == queries[:, None]


@dataclass(frozen=True)
class ModelSize:
    params: int
    non_embedding_params: int
    flops_per_token: float  # training (forward + backward) FLOPs per token at full context


def model_size(cfg: ModelConfig) -> ModelSize:
    """Parameter count and training FLOPs per token as functions of the config alone."""
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    hidden = mlp_hidden(cfg)
    mlp = C * hidden * (3 if cfg.mlp == "swiglu" else 2)
    attn = 4 * C * C
    bias = (3 * C + C + hidden * (2 if cfg.mlp == "swiglu" else 1) + C) if cfg.bias else 0
    norm = C * (1 if cfg.norm == "rmsnorm" else (2 if cfg.bias else 1))
    per_layer = attn + mlp + bias + 2 * norm
    embeddings = V * C + (cfg.block_size * C if cfg.position == "learned" else 0)
    head = 0 if cfg.tie_embeddings else V * C
    shift = C * C if cfg.token_shift else 0
    params = embeddings + L * per_layer + norm + head + shift
    non_embedding = params - embeddings
    # 6N for the matmuls of forward+backward (the LM head included), plus 12 * L * C * T for attention
    # scores and values (PaLM appendix B; nanoGPT and nanochat count the same, so MFU compares with theirs)
    matmul_params = L * (attn + mlp) + V * C + shift
    flops = 6 * matmul_params + 12 * L * C * cfg.block_size
    return ModelSize(params, non_embedding, float(flops))


def weights_digest(module: nn.Module) -> str:
    """A fingerprint of a model's weights (the first 4 KiB of each tensor), to key files derived from them."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.float().cpu().numpy().tobytes()[:4096])
    return digest.hexdigest()
