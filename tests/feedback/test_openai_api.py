"""The OpenAI-compatible API (llm/feedback/openai_api.py), driven by the official `openai` client against a real
server (uvicorn in a thread on a free port): the replies are the model's own, in OpenAI's wire format."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import pytest
import torch

openai = pytest.importorskip("openai", reason="the API tests drive the openai client: pip install -e '.[api]'")

from llm.config import ModelConfig  # noqa: E402
from llm.feedback import chat_batches  # noqa: E402
from llm.feedback.chat_batches import REPLY_FAILED, ChatBatcher, ChatModel  # noqa: E402
from llm.feedback.web import create_app  # noqa: E402
from llm.generate import SamplingParams, generate  # noqa: E402
from llm.model import GPT  # noqa: E402
from llm.tokenizer import render_prompt  # noqa: E402

MODEL = "sft"  # the run name of the checkpoint path given to create_app
HI = [{"role": "user", "content": "What is the first word in: green apples fall?"}]


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    # untied: a random model with tied embeddings repeats the prompt's last token, a special one that decodes to ""
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32, tie_embeddings=False)
    return GPT(cfg).eval()


@contextmanager
def serving(app):
    """The app on 127.0.0.1 at a free port, served by uvicorn in a thread; yields its /v1 address."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def chat(model, tokenizer) -> ChatModel:
    return ChatModel(model, tokenizer, threading.Lock())


@pytest.fixture(scope="module")
def client(chat):
    with serving(create_app(chat, None, f"runs/tiny/{MODEL}")) as url:
        yield openai.OpenAI(base_url=url, api_key="unused on loopback", max_retries=0, timeout=60)


def ask(client, **fields):
    return client.chat.completions.create(model=MODEL, messages=HI, **fields)


def test_the_models_list_names_the_one_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]


def test_a_reply_counts_its_tokens_and_a_cut_one_says_length(client, tokenizer):
    reply = ask(client, temperature=0, max_tokens=12)
    [choice] = reply.choices
    assert reply.object == "chat.completion" and reply.model == MODEL and reply.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.finish_reason == "length"
    assert reply.usage.prompt_tokens == len(render_prompt(tokenizer, HI))
    assert reply.usage.completion_tokens == 12 and reply.usage.total_tokens == reply.usage.prompt_tokens + 12


def test_a_streamed_reply_reassembles_into_the_whole_reply(client):
    whole = ask(client, temperature=0, max_tokens=20, seed=3)
    chunks = list(ask(client, temperature=0, max_tokens=20, seed=3, stream=True, stream_options={"include_usage": True}))
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    *pieces, end, last = chunks
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == whole.choices[0].message.content
    assert len(pieces) > 2 and end.choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert last.choices == [] and last.usage == whole.usage


def test_a_seed_replays_its_sample_and_each_of_n_choices_draws_its_own(client):
    first = ask(client, temperature=1.0, max_tokens=16, seed=7, n=2)
    again = ask(client, temperature=1.0, max_tokens=16, seed=7, n=2)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices] and texts[0] != texts[1]
    assert [c.index for c in first.choices] == [0, 1] and first.usage.completion_tokens == 32


def test_a_completion_continues_plain_text_as_the_model_does(client, model, tokenizer):
    prompt = "The cat sat on the"
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    out = generate(model, [ids], SamplingParams(10, 0.0, stop_ids=(tokenizer.eos_id,)), tokenizer.pad_id)
    assert reply.object == "text_completion" and reply.choices[0].text == tokenizer.decode(out.tokens[0])
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (len(ids), len(out.tokens[0]))
    streamed = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text


def test_a_stop_text_ends_the_reply_before_it_streamed_or_not(client):
    full = ask(client, temperature=0, max_tokens=30).choices[0].message.content
    stop = full[6:9]
    expected = full[: full.find(stop)]
    cut = ask(client, temperature=0, max_tokens=30, stop=[stop, "never appears"])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 30
    chunks = list(ask(client, temperature=0, max_tokens=30, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_fields_clients_send_at_their_neutral_values_are_accepted(client):
    reply = ask(client, temperature=0, max_tokens=4, user="ana", frequency_penalty=0, presence_penalty=0, logprobs=False,
                top_p=1.0, n=1, extra_body={"top_k": 0})
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize("fields, param", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 100_000}, "max_completion_tokens"),
    ({"n": 9}, "n"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"logprobs": True}, "logprobs"),
    ({"stop": [""]}, "stop"),
    ({"extra_body": {"min_p": 0.1}}, "min_p"),
])
def test_a_bad_field_is_a_400_naming_it(client, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, **fields)
    assert caught.value.body["param"] == param and caught.value.body["type"] == "invalid_request_error"
    assert param in caught.value.body["message"]


def test_an_unknown_model_is_a_404_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert caught.value.code == "model_not_found" and "'sft'" in caught.value.body["message"]


def test_a_body_over_the_limit_is_a_413(client):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * (2 << 20)}])
    assert caught.value.status_code == 413 and caught.value.body["type"] == "invalid_request_error"


def test_a_full_queue_is_a_429(model, tokenizer):
    chat = ChatModel(model, tokenizer, threading.Lock())
    chat.batches = ChatBatcher(model, tokenizer, chat.lock, max_waiting=2)
    with serving(create_app(chat, None, MODEL)) as url, chat.lock:  # the worker holds at most one while it waits
        client = openai.OpenAI(base_url=url, api_key="-", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            ask(client, n=4, max_tokens=2)


def test_a_failed_reply_is_a_500_that_tells_nothing_of_the_exception(model, tokenizer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(chat_batches, "generate", broken)
    with serving(create_app(ChatModel(model, tokenizer, threading.Lock()), None, MODEL)) as url:
        client = openai.OpenAI(base_url=url, api_key="-", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            ask(client, max_tokens=2)
    assert caught.value.body["message"] == REPLY_FAILED and "secret" not in str(caught.value.body)


def test_a_server_with_tokens_takes_a_raters_token_as_the_api_key(model, tokenizer):
    app = create_app(ChatModel(model, tokenizer, threading.Lock()), None, MODEL, hosts=None, tokens={"s3cret": "ana"})
    with serving(app) as url:
        with pytest.raises(openai.AuthenticationError) as caught:
            ask(openai.OpenAI(base_url=url, api_key="wrong", max_retries=0), max_tokens=2)
        assert caught.value.code == "invalid_api_key"
        assert ask(openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0), max_tokens=2).choices[0].finish_reason


def test_a_client_that_hangs_up_on_a_whole_reply_frees_the_model(chat, model):
    """A non-streamed reply has no stream to close: the server watches the connection and ends the reply."""
    steps = []
    hook = model.register_forward_hook(lambda *args: steps.append(1))
    body = (b'{"model": "sft", "max_tokens": 1024, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}')
    try:
        with serving(create_app(chat, None, MODEL)) as url:
            host, port = url.removeprefix("http://").removesuffix("/v1").split(":")
            with socket.create_connection((host, int(port))) as conn:
                conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                deadline = time.monotonic() + 30
                while not steps and time.monotonic() < deadline:
                    time.sleep(0.01)
            assert chat.lock.acquire(timeout=60)
            chat.lock.release()
    finally:
        hook.remove()
    assert 0 < len(steps) < 500, f"{len(steps)} forward passes of 1024: the reply went on after its client left"


def test_top_k_and_top_p_reach_the_sampler(client):
    """Keeping only the likeliest token (top_k 1, or a nucleus too small for a second) samples the greedy reply."""
    greedy = ask(client, temperature=0, max_tokens=16).choices[0].message.content
    assert ask(client, temperature=1.0, max_tokens=16, seed=1, extra_body={"top_k": 1}).choices[0].message.content == greedy
    assert ask(client, temperature=1.0, max_tokens=16, seed=1, top_p=1e-6).choices[0].message.content == greedy
