"""Sampling: temperature, top-k, top-p, stop tokens, a KV cache, streaming, batches of prompts.

Prompts of different lengths are left-padded into one batch; the model's attention mask keeps padding
out of attention and out of the positions. When a sequence outgrows the context, the cache is rebuilt
from its most recent half-context of tokens (the cached equivalent of cropping the input).

Three ways to run the cached decode step (`decode=`): "dynamic" slices the cache to its current length
each token; "static" keeps every shape fixed (`GPT.decode_step`); "graph" records the static step once as
a CUDA graph and replays it, one launch per token instead of about 150 small kernels, which is what
bounds one sequence on a GPU. "auto" is the dynamic step everywhere for now: on the CPU the static step
attends over the whole context and measured slower (docs/benchmarks.md), and the graph has not yet run
on a GPU (tests/test_cuda_path.py checks its tokens there), so it is asked for by name until it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from llm.errors import ConfigError
from llm.losses import token_logprobs
from llm.model import GPT, KVCache
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


@dataclass
class SharedDraws:
    """Draws for rows `first` onward of a batch of `total_rows` that several processes sample between them.

    Each step every process draws the whole batch's uniforms from a generator they all seeded alike and
    keeps its own rows'; a row's token is the one whose cumulative probability interval holds its draw.
    So a row's tokens depend on its own distribution and draws alone: not on its batch mates, nor on
    which process samples it, and one kernel serves the whole batch where a generator per row needs a
    draw per row.
    """

    generator: torch.Generator
    total_rows: int
    first: int = 0

    def sample(self, probs: torch.Tensor) -> torch.Tensor:
        uniforms = torch.rand(self.total_rows, generator=self.generator, device=self.generator.device)
        mine = uniforms[self.first : self.first + probs.shape[0]].to(probs.device)
        cumulative = probs.cumsum(dim=-1)
        # scaled by each row's own total so rounding in the sum cannot leave a draw past the last token
        target = (mine * cumulative[:, -1])[:, None]
        return (cumulative <= target).sum(dim=-1).clamp(max=probs.shape[-1] - 1)


def sample_from(logprobs: torch.Tensor, temperature: float, generator: torch.Generator | SharedDraws | None) -> torch.Tensor:
    if temperature <= 0:
        return logprobs.argmax(dim=-1)
    if isinstance(generator, SharedDraws):
        return generator.sample(logprobs.exp())
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


DECODE_MODES = ("auto", "dynamic", "static", "graph")


def decode_mode(decode: str, device: torch.device) -> str:
    """The decode step `decode` names on this device; "auto" is the dynamic step (see the module's notes)."""
    if decode not in DECODE_MODES:
        raise ConfigError(f"decode must be one of {', '.join(DECODE_MODES)}; got {decode!r}")
    if decode == "graph" and device.type != "cuda":
        raise ConfigError(f"decode='graph' records a CUDA graph and needs a CUDA device, not {device.type}; use 'static' or 'dynamic'")
    return "dynamic" if decode == "auto" else decode


def per_row(value, n_rows: int, name: str) -> list:
    """`value` repeated for every row, or its own list of one per row."""
    if not isinstance(value, Sequence):
        return [value] * n_rows
    if len(value) != n_rows:
        raise ValueError(f"{name}: {len(value)} given for {n_rows} prompts; give one, or one per prompt")
    return list(value)


def choose(logits: torch.Tensor, params: SamplingParams | list[SamplingParams],
           generator: torch.Generator | SharedDraws | list[torch.Generator | None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's next token and its log-probability under the distribution it was drawn from. With one
    setting and one generator per row, each row draws alone, so its tokens do not depend on its batch mates."""
    if isinstance(params, SamplingParams):
        logprobs = next_token_distribution(logits, params)
        token = sample_from(logprobs, params.temperature, generator)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)
    picks = [choose(logits[row : row + 1], p, g) for row, (p, g) in enumerate(zip(params, generator))]
    return torch.cat([token for token, _ in picks]), torch.cat([logprob for _, logprob in picks])


@torch.no_grad()
def generate(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams | Sequence[SamplingParams],
    pad_id: int,
    *,
    use_cache: bool = True,
    decode: str = "auto",
    generator: torch.Generator | SharedDraws | Sequence[torch.Generator] | None = None,
    on_token: Callable[[int, int], bool | None] | None = None,
) -> Generation:
    """Continue each prompt; `on_token(row, token)` is called as each token is chosen (streaming), and a row
    whose call returns True ends there (its reader left). `params` and `generator` may be one per prompt;
    a `SharedDraws` samples the batch as rows of a larger one."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (start it with the <|bos|> token)")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    stepper = make_stepper(model, ids, mask, use_cache, decode)
    rows = per_row(params, len(prompts), "params")
    if not isinstance(params, SamplingParams) or isinstance(generator, Sequence):
        params, generator = rows, per_row(generator, len(prompts), "generator")
    stop = stop_table([p.stop_ids for p in rows], device)
    limits = torch.tensor([p.max_new_tokens for p in rows], device=device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    lengths = torch.zeros(len(prompts), dtype=torch.long, device=device)
    new_tokens, new_logprobs = [], []
    logits = stepper.first_logits()
    for step in range(max(p.max_new_tokens for p in rows)):
        token, logprob = choose(logits, params, generator)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        new_tokens.append(token)
        new_logprobs.append(logprob)
        lengths += ~finished
        ended = (token[:, None] == stop).any(dim=1) | (limits <= step + 1)
        if on_token is not None:
            left = [row for row in (~finished).nonzero().flatten().tolist() if on_token(row, int(token[row]))]
            if left:
                ended[left] = True
        finished = finished | ended
        if bool(finished.all()):
            break
        logits = stepper.next_logits(token)
    return collect(new_tokens, new_logprobs, lengths.tolist(), [p.stop_ids for p in rows])


def stop_table(stop_ids: list[tuple[int, ...]], device) -> torch.Tensor:
    """(B, S) stop tokens per row, padded with -1, which no token equals."""
    width = max(1, max(len(s) for s in stop_ids))
    return torch.tensor([list(s) + [-1] * (width - len(s)) for s in stop_ids], device=device)


def collect(new_tokens, new_logprobs, lengths: list[int], stop_ids: list[tuple[int, ...]]) -> Generation:
    tokens = torch.stack(new_tokens, dim=1).tolist()
    logprobs = torch.stack(new_logprobs, dim=1).tolist()
    out_tokens = [row[:n] for row, n in zip(tokens, lengths)]
    finished = [bool(row) and row[-1] in stops for row, stops in zip(out_tokens, stop_ids)]
    return Generation(out_tokens, finished, [row[:n] for row, n in zip(logprobs, lengths)])


def make_stepper(model: GPT, ids: torch.Tensor, mask: torch.Tensor, use_cache: bool, decode: str):
    if not use_cache:
        return FullStepper(model, ids, mask)
    mode = decode_mode(decode, ids.device)
    if mode == "dynamic":
        return CachedStepper(model, ids, mask)
    return StaticStepper(model, ids, mask, graph=mode == "graph")


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
        return self.decode(token)

    def decode(self, token: torch.Tensor) -> torch.Tensor:
        return self.model(token[:, None], cache=self.cache)[:, -1]


class StaticStepper(CachedStepper):
    """The cached stepper over one fixed-shape cache and `GPT.decode_step`; with `graph` (CUDA only) the
    step is recorded once as a CUDA graph and replayed for every token. A context overflow refills the
    same buffers in place, so the recorded graph stays valid."""

    def __init__(self, model: GPT, ids: torch.Tensor, mask: torch.Tensor, graph: bool):
        super().__init__(model, ids, mask)
        self.cache = model.new_cache(ids.shape[0], self.block_size)
        self.graph = graph
        self.captured: CapturedStep | None = None

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.cache.reset()
        logits = self.model(ids, attention_mask=mask, cache=self.cache)[:, -1]
        self.cache.write_slot.fill_(self.cache.length)
        return logits

    def decode(self, token: torch.Tensor) -> torch.Tensor:
        self.cache.length += 1  # the host's count, which decides when the context overflows
        if not self.graph:
            return self.model.decode_step(token, self.cache)
        if self.captured is None:
            self.captured = CapturedStep(self.model, self.cache, token)
        return self.captured(token)


def autocast_without_cache(device_type: str):
    """The autocast in force, minus its weight-cast cache: casts cached during a capture would be freed
    when the autocast context closes while the graph still points at them (torch.cuda.graph's notes)."""
    return torch.autocast(device_type, dtype=torch.get_autocast_dtype(device_type),
                          enabled=torch.is_autocast_enabled(device_type), cache_enabled=False)


class CapturedStep:
    """`GPT.decode_step` over one cache, recorded as a CUDA graph: a call copies the token into the graph's
    input and replays every kernel of the step at once."""

    def __init__(self, model: GPT, cache: KVCache, token: torch.Tensor):
        self.token = token.clone()
        state = (cache.key_valid, cache.next_position, cache.write_slot, cache.last_token, cache.last_valid)
        before = [tensor.clone() for tensor in state]
        # one eager run on a side stream first, so lazy set-up (cuBLAS handles, kernel choice) is not captured
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast_without_cache("cuda"):
            model.decode_step(self.token, cache)
        torch.cuda.current_stream().wait_stream(side)
        for tensor, saved in zip(state, before):  # undo the warm-up's step; its key and value are overwritten
            tensor.copy_(saved)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), autocast_without_cache("cuda"):
            self.logits = model.decode_step(self.token, cache)

    def __call__(self, token: torch.Tensor) -> torch.Tensor:
        self.token.copy_(token)
        self.graph.replay()
        return self.logits.clone()  # the next replay overwrites the graph's output


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
                   generator: torch.Generator | SharedDraws) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
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
