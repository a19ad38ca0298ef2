import pytest
import torch

from llm.config import ModelConfig
from llm.errors import ConfigError
from llm.generate import SamplingParams, SharedDraws, StaticStepper, decode_mode, filter_logits, generate, left_pad, sequence_logprobs
from llm.model import GPT


def model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=50, block_size=48, n_layer=2, n_head=2, n_embd=32)
    cfg.update(kw)
    return GPT(ModelConfig(**cfg)).eval()


PROMPTS = [[1, 5, 7, 9], [1, 3], [1, 8, 8, 8, 8, 2, 4]]


def test_kv_cache_greedy_equals_recomputation():
    m = model()
    params = SamplingParams(max_new_tokens=30, temperature=0.0)
    cached = generate(m, PROMPTS, params, pad_id=0, use_cache=True)
    full = generate(m, PROMPTS, params, pad_id=0, use_cache=False)
    assert cached.tokens == full.tokens
    assert all(len(t) == 30 for t in cached.tokens)


def test_batched_generation_equals_one_prompt_at_a_time():
    m = model(position="learned")
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    batched = generate(m, PROMPTS, params, pad_id=0)
    for prompt, tokens in zip(PROMPTS, batched.tokens):
        assert generate(m, [prompt], params, pad_id=0).tokens[0] == tokens


def test_stop_token_ends_a_sequence():
    m = model()
    first = generate(m, [PROMPTS[0]], SamplingParams(max_new_tokens=20, temperature=0.0), pad_id=0).tokens[0]
    stop = first[3]
    out = generate(m, [PROMPTS[0]], SamplingParams(max_new_tokens=20, temperature=0.0, stop_ids=(stop,)), pad_id=0)
    assert out.tokens[0] == first[: first.index(stop) + 1] and out.finished == [True]


def test_sampling_is_seeded():
    m = model()
    params = SamplingParams(max_new_tokens=15, temperature=1.0)
    a = generate(m, PROMPTS, params, 0, generator=torch.Generator().manual_seed(1))
    b = generate(m, PROMPTS, params, 0, generator=torch.Generator().manual_seed(1))
    c = generate(m, PROMPTS, params, 0, generator=torch.Generator().manual_seed(2))
    assert a.tokens == b.tokens and a.logprobs == b.logprobs
    assert a.tokens != c.tokens  # the generator drives the draws: another seed, other tokens


def ranks_of_sampled_tokens(m, prompts, tokens) -> list[int]:
    """For every sampled token, how many tokens had a higher logit at its step, from a fresh full forward pass
    over the unpadded prefix (no cache, no batch): 0 is the top token, top-k keeps ranks below k."""
    ranks = []
    with torch.no_grad():
        for prompt, new in zip(prompts, tokens):
            for i, token in enumerate(new):
                logits = m(torch.tensor([prompt + new[:i]]))[0, -1]
                # a tolerance, so a tie at the k-th place that the cached, padded batch broke the other way still counts
                ranks.append(int((logits > logits[token] + 1e-4).sum()))
    return ranks


@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_sampling_respects_top_k(k, use_cache):
    m = model()
    params = SamplingParams(max_new_tokens=15, temperature=1.5, top_k=k)
    out = generate(m, PROMPTS, params, 0, use_cache=use_cache, generator=torch.Generator().manual_seed(1))
    ranks = ranks_of_sampled_tokens(m, PROMPTS, out.tokens)
    assert len(ranks) == 45 and max(ranks) < k
    if k > 1:
        assert len(set(ranks)) > 1  # it samples within the top k, not only the top token
    # the control: the same draws without top-k pick tokens outside the top k, so the assertion above can fail
    free = generate(m, PROMPTS, SamplingParams(max_new_tokens=15, temperature=1.5), 0, use_cache=use_cache,
                    generator=torch.Generator().manual_seed(1))
    assert sum(r >= k for r in ranks_of_sampled_tokens(m, PROMPTS, free.tokens)) >= 5


def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, 2:]).all()
    probs = logits.softmax(-1)[0]
    kept = torch.isfinite(filter_logits(logits, 0, 0.8)[0])
    # the smallest prefix of the sorted tokens whose mass reaches 0.8
    assert kept.tolist() == [True, True, False, False, False] and probs[:2].sum() >= 0.8 > probs[0]


def test_generation_past_the_context_keeps_going():
    m = model(block_size=16)
    out = generate(m, [PROMPTS[0]], SamplingParams(max_new_tokens=40, temperature=0.0), pad_id=0)
    assert len(out.tokens[0]) == 40


def test_recorded_logprobs_equal_a_fresh_forward_pass():
    m = model()
    params = SamplingParams(max_new_tokens=10, temperature=0.7)
    out = generate(m, PROMPTS, params, 0, generator=torch.Generator().manual_seed(3))
    for prompt, tokens, logprobs in zip(PROMPTS, out.tokens, out.logprobs):
        ids = torch.tensor([prompt + tokens])
        fresh = sequence_logprobs(m, ids, torch.ones_like(ids, dtype=torch.bool), temperature=0.7)[0, len(prompt) - 1 :]
        torch.testing.assert_close(fresh, torch.tensor(logprobs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad, key", [
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_p": float("nan")}, "top_p"),
    ({"temperature": -1.0}, "temperature"), ({"temperature": float("inf")}, "temperature"),
    ({"top_k": -1}, "top_k"), ({"max_new_tokens": 0}, "max_new_tokens"),
], ids=lambda x: str(x))
def test_bad_sampling_params_are_one_line_config_errors(bad, key):
    with pytest.raises(ConfigError) as err:
        SamplingParams(**bad)
    message = str(err.value)
    assert message.startswith(f"key '{key}' must be ") and "\n" not in message


def test_the_smallest_top_p_keeps_the_top_token():
    # top_p 0 used to drop every token and crash torch.multinomial; any top_p > 0 keeps at least the first
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isfinite(filter_logits(logits, 0, 1e-6)[0]).tolist() == [True, False, False, False, False]
    out = generate(model(), PROMPTS, SamplingParams(max_new_tokens=5, temperature=1.0, top_p=1e-6), 0,
                   generator=torch.Generator().manual_seed(0))
    greedy = generate(model(), PROMPTS, SamplingParams(max_new_tokens=5, temperature=0.0), 0)
    assert out.tokens == greedy.tokens


@pytest.mark.parametrize("position", ["rope", "learned", "rope+token_shift"])
@pytest.mark.parametrize("block_size, new_tokens", [(48, 30), (16, 40)], ids=["within-context", "overflows"])
def test_static_decode_greedy_equals_todays_paths(position, block_size, new_tokens):
    """The fixed-shape step (the one a CUDA graph records), run eagerly: the same greedy tokens as the dynamic
    cache and as recomputation, for a left-padded batch and past the context (the cache refilled in place)."""
    m = model(position=position.split("+")[0], block_size=block_size, token_shift=position.endswith("token_shift"))
    if m.shift is not None:
        torch.nn.init.normal_(m.shift.weight, std=0.5)  # it starts at zero, which would hide a wrong predecessor
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0)
    static = generate(m, PROMPTS, params, pad_id=0, decode="static")
    assert static.tokens == generate(m, PROMPTS, params, pad_id=0, decode="dynamic").tokens
    assert static.tokens == generate(m, PROMPTS, params, pad_id=0, use_cache=False).tokens
    assert all(len(t) == new_tokens for t in static.tokens)


def test_static_cache_is_refilled_in_place_when_the_context_overflows():
    """A recorded CUDA graph points at the cache's buffers: overflowing the context must not reallocate them."""
    m = model(block_size=16)
    ids, mask = left_pad(PROMPTS, 0, "cpu")
    stepper = StaticStepper(m, ids, mask, graph=False)
    token = stepper.first_logits().argmax(-1)
    buffers = [t.data_ptr() for t in (stepper.cache.keys, stepper.cache.key_valid, stepper.cache.next_position, stepper.cache.write_slot)]
    lengths = []
    with torch.no_grad():
        for _ in range(20):
            token = stepper.next_logits(token).argmax(-1)
            lengths.append(stepper.cache.length)
            assert int(stepper.cache.write_slot) == stepper.cache.length
    assert 8 in lengths and max(lengths) == 16  # refilled from the most recent half context (8 of 16)
    assert [t.data_ptr() for t in (stepper.cache.keys, stepper.cache.key_valid,
                                   stepper.cache.next_position, stepper.cache.write_slot)] == buffers


def test_each_row_can_have_its_own_settings_and_generator():
    """The chat page's batches: a row with its own settings and generator gets the reply it would get alone."""
    m = model()
    prompts = [[1, 5, 7, 9], [1, 3, 4, 6]]
    rows = [SamplingParams(max_new_tokens=6, temperature=0.0), SamplingParams(max_new_tokens=12, temperature=1.0, top_k=5)]
    seeds = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    together = generate(m, prompts, rows, 0, generator=seeds)
    for prompt, params, seed, tokens in zip(prompts, rows, (1, 2), together.tokens):
        assert generate(m, [prompt], params, 0, generator=torch.Generator().manual_seed(seed)).tokens[0] == tokens
    assert [len(t) for t in together.tokens] == [6, 12]


def test_shared_draws_sample_each_token_as_often_as_its_probability():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.15, 0.05]]).repeat(4000, 1)  # a token of probability 0 in the middle
    draws = SharedDraws(torch.Generator().manual_seed(0), total_rows=4000)
    counts = torch.bincount(draws.sample(probs), minlength=5).double()
    expected = probs[0].double() * 4000
    assert counts[1] == 0
    kept = expected > 0
    chi2 = float(((counts[kept] - expected[kept]) ** 2 / expected[kept]).sum())
    assert chi2 < 16.3  # chi-squared with 3 degrees of freedom, p = 0.001
    skewed = torch.tensor([0.4, 0.0, 0.4, 0.15, 0.05]) * 4000
    assert float(((counts[kept] - skewed[kept]) ** 2 / skewed[kept]).sum()) > 16.3  # the test tells a wrong distribution


def test_shared_draws_give_a_row_the_same_tokens_whichever_process_samples_it():
    """PPO's processes each sample a slice of one batch: the rows come out as the whole batch sampled at once."""
    m = model()
    prompts = [[1, 5, 7, 9], [1, 3], [1, 8, 8, 8, 8, 2, 4], [1, 2, 3]]
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    whole = generate(m, prompts, params, 0, generator=SharedDraws(torch.Generator().manual_seed(3), 4))
    first = generate(m, prompts[:2], params, 0, generator=SharedDraws(torch.Generator().manual_seed(3), 4, 0))
    second = generate(m, prompts[2:], params, 0, generator=SharedDraws(torch.Generator().manual_seed(3), 4, 2))
    assert first.tokens + second.tokens == whole.tokens
    other = generate(m, prompts, params, 0, generator=SharedDraws(torch.Generator().manual_seed(4), 4))
    assert other.tokens != whole.tokens  # the draws decide the tokens
    assert len({tuple(t) for t in whole.tokens}) == 4


def test_a_row_whose_reader_left_ends_and_the_others_go_on():
    m = model()
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    seen = {0: [], 1: [], 2: []}

    def on_token(row: int, token: int) -> bool:
        seen[row].append(token)
        return row == 1 and len(seen[1]) == 3  # row 1's reader leaves after its third token

    out = generate(m, PROMPTS, params, 0, on_token=on_token)
    alone = generate(m, PROMPTS, params, 0)
    assert out.tokens[1] == alone.tokens[1][:3] == seen[1] and out.finished[1] is False
    assert out.tokens[0] == alone.tokens[0] and out.tokens[2] == alone.tokens[2] and len(seen[0]) == 10


def test_a_cuda_graph_is_refused_off_cuda_and_an_unknown_decode_named():
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        generate(model(), PROMPTS, SamplingParams(max_new_tokens=2), 0, decode="graph")
    with pytest.raises(ConfigError, match="decode must be one of auto, dynamic, static, graph; got 'fast'"):
        generate(model(), PROMPTS, SamplingParams(max_new_tokens=2), 0, decode="fast")


def test_auto_is_the_dynamic_step_until_the_graph_has_run_on_a_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device name, not a GPU: nothing runs on it
    assert decode_mode("auto", cuda) == "dynamic" and decode_mode("auto", cpu) == "dynamic"
    assert decode_mode("graph", cuda) == "graph" and decode_mode("static", cpu) == "static"
