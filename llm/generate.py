"""Sampling: temperature, top-k, top-p, stop tokens, a KV cache, streaming, batches of prompts.

Prompts of different lengths are left-padded into one batch; the model's attention mask keeps padding
out of attention and out of the positions. When a sequence outgrows the context, the cache is rebuilt
from its most recent half-context of tokens (the cached equivalent of cropping the input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from llm.losses import token_logprobs
from llm.model import GPT
from llm.settings_checks import Checked, check_sampling


@dataclass(frozen=True)
class SamplingParams(Checked):
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    stop_ids: tuple[int, ...] = ()

    def check(self) -> None:
        check_sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


@dataclass
class Generation:
    tokens: list[list[int]]  # new tokens of each prompt, the stop token included when one was produced
    finished: list[bool]  # whether each sequence ended with a stop token within max_new_tokens
    logprobs: list[list[float]] = field(default_factory=list)  # log p(token) under the sampling distribution


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token_distribution(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probabilities the sampler draws from, for logits (B, V)."""
    logits = logits.float()
    if params.temperature > 0:
        logits = logits / params.temperature
    return filter_logits(logits, params.top_k, params.top_p).log_softmax(dim=-1)


def sample_from(logprobs: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    if temperature <= 0:
        return logprobs.argmax(dim=-1)
    return torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = True
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    pad_id: int,
    *,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> Generation:
    """Continue each prompt; `on_token(row, token)` is called as each token is chosen (streaming)."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start it with the <|bos|> token)")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    stepper = CachedStepper(model, ids, mask) if use_cache else FullStepper(model, ids, mask)
    stop = torch.tensor(params.stop_ids or [-1], device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    new_tokens, new_logprobs = [], []
    logits = stepper.first_logits()
    for _ in range(params.max_new_tokens):
        logprobs = next_token_distribution(logits, params)
        token = sample_from(logprobs, params.temperature, generator)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        new_tokens.append(token)
        new_logprobs.append(logprobs.gather(-1, token[:, None]).squeeze(-1))
        if on_token is not None:
            for row in (~finished).nonzero().flatten().tolist():
                on_token(row, int(token[row]))
        finished = finished | torch.isin(token, stop)
        if bool(finished.all()):
            break
        logits = stepper.next_logits(token)
    return collect(new_tokens, new_logprobs, params.stop_ids, len(prompts))


def collect(new_tokens, new_logprobs, stop_ids, n_rows) -> Generation:
    if not new_tokens:
        return Generation([[] for _ in range(n_rows)], [False] * n_rows, [[] for _ in range(n_rows)])
    tokens = torch.stack(new_tokens, dim=1).tolist()
    logprobs = torch.stack(new_logprobs, dim=1).tolist()
    out_tokens, out_logprobs, finished = [], [], []
    for row_tokens, row_logprobs in zip(tokens, logprobs):
        end = next((i + 1 for i, t in enumerate(row_tokens) if t in stop_ids), None)
        finished.append(end is not None)
        end = end or len(row_tokens)
        out_tokens.append(row_tokens[:end])
        out_logprobs.append(row_logprobs[:end])
    return Generation(out_tokens, finished, out_logprobs)


class CachedStepper:
    """Feeds one new token per step through a KV cache; rebuilds the cache when the context is full."""

    def __init__(self, model: GPT, ids: torch.Tensor, mask: torch.Tensor):
        self.model = model
        self.block_size = model.config.block_size
        self.ids, self.mask = ids[:, -self.block_size :], mask[:, -self.block_size :]

    def first_logits(self) -> torch.Tensor:
        return self.prefill(self.ids, self.mask)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.cache = self.model.new_cache(ids.shape[0], self.block_size)
        return self.model(ids, attention_mask=mask, cache=self.cache)[:, -1]

    def next_logits(self, token: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, token[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(token[:, None], dtype=torch.bool)], dim=1)
        if self.cache.length >= self.block_size:
            keep = self.block_size // 2
            self.ids, self.mask = self.ids[:, -keep:], self.mask[:, -keep:]
            return self.prefill(self.ids, self.mask)
        return self.model(token[:, None], cache=self.cache)[:, -1]


class FullStepper:
    """Recomputes the whole (cropped) sequence every step: the reference the cache must agree with."""

    def __init__(self, model: GPT, ids: torch.Tensor, mask: torch.Tensor):
        self.model = model
        self.block_size = model.config.block_size
        self.ids, self.mask = ids, mask

    def first_logits(self) -> torch.Tensor:
        return self.model(self.ids[:, -self.block_size :], attention_mask=self.mask[:, -self.block_size :])[:, -1]

    def next_logits(self, token: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, token[:, None]], dim=1)
        self.mask = torch.cat([self.mask, torch.ones_like(token[:, None], dtype=torch.bool)], dim=1)
        return self.first_logits()


def sequence_logprobs(model: GPT, ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1, shape (B, T-1): a fresh forward pass over whole sequences."""
    return token_logprobs(model(ids, attention_mask=mask)[:, :-1], ids[:, 1:], temperature)


def sample_replies(policy: GPT, prompts: Sequence[Sequence[int]], params: SamplingParams, pad_id: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """(input_ids, attention_mask, reply_mask, offset, finished) for a batch of sampled replies."""
    device = next(policy.parameters()).device
    out = generate(policy, prompts, params, pad_id, generator=generator)
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)
    width = max(1, max(len(t) for t in out.tokens))
    replies = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    reply_mask = torch.zeros((len(prompts), width), dtype=torch.bool, device=device)
    for row, tokens in enumerate(out.tokens):
        replies[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long, device=device)
        reply_mask[row, : len(tokens)] = True
    input_ids = torch.cat([prompt_ids, replies], dim=1)
    attention_mask = torch.cat([prompt_mask, reply_mask], dim=1)
    finished = torch.tensor(out.finished, device=device)
    return input_ids, attention_mask, reply_mask, prompt_ids.shape[1], finished
