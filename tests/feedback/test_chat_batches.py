"""Concurrent chat requests (llm/feedback/chat_batches.py): decoded in one batch, each reply as it would be alone."""

from __future__ import annotations

import threading

import pytest
import torch

from llm.chat import chat_sampling, reply_to
from llm.config import ModelConfig
from llm.feedback import chat_batches
from llm.feedback.web import ChatModel
from llm.model import GPT

CONVERSATIONS = [
    [{"role": "user", "content": "Say cat."}],
    [{"role": "user", "content": "What is the first word in: green apples fall?"},
     {"role": "assistant", "content": "green"}, {"role": "user", "content": "And the last?"}],
]


@pytest.fixture()
def chat(tokenizer) -> ChatModel:
    torch.manual_seed(0)
    # untied: a random model with tied embeddings repeats the prompt's last token, a special one that decodes to ""
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32, tie_embeddings=False)
    model = GPT(cfg).eval()
    return ChatModel(model, tokenizer, threading.Lock())


def ask_together(chat: ChatModel, params, gone: list[threading.Event]) -> list[list[dict]]:
    """Every conversation asked while the model is busy, so that all wait for the same next batch."""
    events: list[list[dict]] = [[] for _ in CONVERSATIONS]
    closed = [threading.Event() for _ in CONVERSATIONS]
    with chat.lock:
        for row, messages in enumerate(CONVERSATIONS):
            chat.answer(messages, params, lambda e, row=row: closed[row].set() if e is None else events[row].append(e), gone[row])
    assert all(c.wait(60) for c in closed), "a reply's stream was never closed"
    return events


def batch_sizes(monkeypatch) -> list[int]:
    sizes, real = [], chat_batches.generate

    def counting(model, prompts, *args, **kw):
        sizes.append(len(prompts))
        return real(model, prompts, *args, **kw)

    monkeypatch.setattr(chat_batches, "generate", counting)
    return sizes


def test_concurrent_requests_are_decoded_in_one_batch_each_as_it_would_be_alone(chat, monkeypatch):
    sizes = batch_sizes(monkeypatch)
    params = chat_sampling(chat.tok, 20, 0.0, 0, 1.0)
    events = ask_together(chat, params, [threading.Event(), threading.Event()])
    assert sizes == [2]
    alone = [reply_to(chat.model, chat.tok, messages, params, None) for messages in CONVERSATIONS]
    assert alone[0][0] != alone[1][0]  # two different replies, so a mix-up between the rows would show
    for (text, finished), streamed in zip(alone, events):
        assert streamed[-1].items() >= {"done": True, "finished": finished}.items()
        assert "".join(e["text"] for e in streamed[:-1]) == text and len(streamed) > 2


def test_a_sampled_reply_does_not_depend_on_its_batch_mate(chat, monkeypatch):
    """Each request draws from its own seeded generator: the first reply sampled alongside another is the one the
    same seed gives alone (the chat page's first reply of a server run uses seed 0)."""
    sizes = batch_sizes(monkeypatch)
    params = chat_sampling(chat.tok, 20, 1.0, 0, 1.0)
    events = ask_together(chat, params, [threading.Event(), threading.Event()])
    text, finished = reply_to(chat.model, chat.tok, CONVERSATIONS[0], params, torch.Generator().manual_seed(0))
    assert sizes == [2] and "".join(e.get("text", "") for e in events[0]) == text


def test_a_request_whose_page_left_ends_while_its_batch_mate_goes_on(chat, monkeypatch):
    sizes = batch_sizes(monkeypatch)
    params = chat_sampling(chat.tok, 20, 0.0, 0, 1.0)
    left = threading.Event()
    left.set()  # the first page is gone before its first token
    events = ask_together(chat, params, [left, threading.Event()])
    text, finished = reply_to(chat.model, chat.tok, CONVERSATIONS[1], params, None)
    assert sizes == [1] and events[0] == []  # the request whose page left while it waited is never fitted or decoded
    assert "".join(e["text"] for e in events[1][:-1]) == text and events[1][-1].items() >= {"done": True, "finished": finished}.items()


def test_a_poisoned_request_fails_alone_and_its_batch_mate_gets_its_whole_reply(chat, monkeypatch):
    """temperature 1e-40 turns the logits into inf and NaN (the page refuses it; this is the worker's own guard)."""
    sizes = batch_sizes(monkeypatch)
    good = chat_sampling(chat.tok, 20, 0.0, 0, 1.0)
    poisoned = chat_sampling(chat.tok, 20, 1e-40, 0, 1.0)
    events: list[list[dict]] = [[], []]
    closed = [threading.Event(), threading.Event()]
    with chat.lock:
        for row, params in enumerate((poisoned, good)):
            chat.answer(CONVERSATIONS[row], params, lambda e, row=row: closed[row].set() if e is None else events[row].append(e),
                        threading.Event())
    assert all(c.wait(60) for c in closed), "a reply's stream was never closed"
    text, finished = reply_to(chat.model, chat.tok, CONVERSATIONS[1], good, None)
    assert sizes[0] == 2
    assert "".join(e.get("text", "") for e in events[1]) == text and events[1][-1].items() >= {"done": True, "finished": finished}.items()
    assert events[0][-1] == {"error": chat_batches.REPLY_FAILED}


def test_a_full_queue_is_refused_at_once(chat):
    from llm.feedback.chat_batches import QueueFull

    batcher = chat_batches.ChatBatcher(chat.model, chat.tok, chat.lock, max_waiting=1)
    params = chat_sampling(chat.tok, 2, 0.0, 0, 1.0)
    with chat.lock, pytest.raises(QueueFull):  # the worker holds at most one while it waits for the model
        for seed in range(3):
            batcher.submit(chat_batches.ChatRequest(CONVERSATIONS[0], params, lambda e: None, threading.Event(), seed))


def test_a_long_conversation_is_cut_to_what_can_fit_before_it_is_fitted(chat):
    from llm.chat import fit_prompt

    long = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"word {i}"} for i in range(4001)]
    block = chat.model.config.block_size
    kept = chat_batches.latest(long, block)
    assert len(kept) <= block and kept[0]["role"] == "user" and kept[-1] == long[-1]
    assert fit_prompt(chat.tok, kept, block, 20) == fit_prompt(chat.tok, long[-401:], block, 20)  # what dropping pairs gives
