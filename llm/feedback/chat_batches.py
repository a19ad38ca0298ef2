"""Chat replies decoded together: one worker thread serves every chat request, in batches.

A request waits in a queue; when the model is free (no batch running, the ranking sampler done) the worker
takes every request waiting, up to `max_batch`, and decodes them in one batched `generate` call, each row
with its own settings and its own seeded generator, each streaming its own text. On a GPU one sequence is
bound by kernel launches, so a batch of replies costs about what one does; on the CPU a batch of 8 runs
3-4x the tokens per second of one (docs/benchmarks.md, Sampling).

A batch that fails is decoded again row by row, so one bad request never fails its batch mates: each row
draws from its own seeded generator, so a row's reply alone is the one it was giving in the batch, and the
text it had already sent is not sent twice. A page gets "the reply failed", never the exception's text.
The queue is bounded (QueueFull past `max_waiting`), and a conversation is cut to its last `block_size`
messages before it is fitted: a message is at least one token, so older ones could never fit anyway.

A request is a conversation (the assistant's next turn) or plain text to continue (a pre-trained model's
prompt). Texts that end a reply (`stop_texts`) are held back while they might still be starting, so a
reader never sees part of one; the reply ends before it. Its end says how it ended and the tokens it took.
ChatModel is the front the pages and the OpenAI-compatible API share, and reply_events carries its replies'
events from the worker's thread into the server's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import torch

from llm.chat import fit_prompt, prompt_budget, seeded
from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.stream import TextDecoder
from llm.tokenizer import Tokenizer

Emit = Callable[[dict | None], None]
REPLY_FAILED = "the reply failed (an error in the server; its log has the details)"


class QueueFull(Exception):
    """Too many chat requests are waiting; the page is asked to try again."""


@dataclass
class ChatRequest:
    """One reply to generate: `emit` gets {"text": piece}s, then {"done": True, "finished": whether it ended by
    itself (a stop token or a stop text), "prompt_tokens": n, "completion_tokens": n} or {"error": ...}, then None."""

    messages: list[dict] | str  # a conversation for the assistant's next turn, or plain text to continue
    params: SamplingParams
    emit: Emit
    gone: threading.Event  # set when the page stopped reading: the row ends at its next token
    seed: int
    stop_texts: tuple[str, ...] = ()


class ChatBatcher:
    """The queue of chat requests and the worker thread that decodes them in batches under the model's lock."""

    def __init__(self, model: GPT, tok: Tokenizer, lock: threading.Lock, max_batch: int = 8, max_waiting: int = 64):
        self.model, self.tok, self.lock, self.max_batch = model, tok, lock, max_batch
        self.waiting: queue.Queue[ChatRequest] = queue.Queue(max_waiting)
        self.worker: threading.Thread | None = None
        self.starting = threading.Lock()

    def submit(self, request: ChatRequest) -> None:
        try:
            self.waiting.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self.waiting.maxsize} chat requests are already waiting") from None
        with self.starting:  # the worker starts with the first request: a page with no model never needs one
            if self.worker is None:
                self.worker = threading.Thread(target=self.serve, name="chat-batches", daemon=True)
                self.worker.start()

    def serve(self) -> None:
        while True:
            first = self.waiting.get()
            with self.lock:
                live = []
                for request in [first, *self.more(self.max_batch - 1)]:
                    if request.gone.is_set():  # its page left while it waited: nothing to fit or decode
                        request.emit(None)
                    else:
                        live.append(request)
                if live:
                    self.decode(live)

    def more(self, limit: int) -> list[ChatRequest]:
        """The requests that arrived while the model was busy, without waiting for any other."""
        batch = []
        while len(batch) < limit:
            try:
                batch.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        return batch

    def decode(self, batch: list[ChatRequest]) -> None:
        """Every row's reply, then its end; a failed batch is decoded again one row at a time."""
        sent = [0] * len(batch)  # characters of text each row has sent
        try:
            self.decode_together(batch, sent)
        except Exception:  # noqa: BLE001 - whatever one row broke, the others still get their replies
            traceback.print_exc(file=sys.stderr)
            if len(batch) == 1:
                batch[0].emit({"error": REPLY_FAILED})
            else:
                for row, request in enumerate(batch):
                    if request.gone.is_set():
                        request.emit(None)
                    else:
                        self.decode([resent_after(request, sent[row])])
                return
        for request in batch:
            request.emit(None)

    def decode_together(self, batch: list[ChatRequest], sent: list[int]) -> None:
        texts = [ReplyText(self.tok, r.stop_texts) for r in batch]
        counts = [0] * len(batch)  # tokens each row has drawn, its stop token included

        def on_token(row: int, token: int) -> bool:
            if batch[row].gone.is_set():
                return True  # its page left: end this row, and the batch once every row has ended
            counts[row] += 1
            piece = texts[row].add(token)
            if piece:
                batch[row].emit({"text": piece})
                sent[row] += len(piece)
            return texts[row].stopped

        prompts = [self.prompt_ids(r) for r in batch]
        generators = [seeded(self.model, r.seed) for r in batch]
        with torch.inference_mode():
            out = generate(self.model, prompts, [r.params for r in batch], self.tok.pad_id,
                           generator=generators, on_token=on_token)
        for request, text, finished, prompt, count in zip(batch, texts, out.finished, prompts, counts):
            if request.gone.is_set():
                continue
            tail = text.finish()
            if tail:
                request.emit({"text": tail})
            request.emit({"done": True, "finished": finished or text.stopped, "prompt_tokens": len(prompt),
                          "completion_tokens": count})

    def prompt_ids(self, request: ChatRequest) -> list[int]:
        block_size, max_new_tokens = self.model.config.block_size, request.params.max_new_tokens
        if not isinstance(request.messages, str):
            system, history = split_system(request.messages)
            return fit_prompt(self.tok, latest(history, block_size), block_size, max_new_tokens, system)
        return [self.tok.bos_id, *self.tok.encode(request.messages)][-prompt_budget(block_size, max_new_tokens):]


class ReplyText:
    """A reply's text as its tokens arrive, cut before the first of its stop texts: text that might be the
    start of one is held back until it is known not to be, so no reader ever sees part of a stop text."""

    def __init__(self, tok: Tokenizer, stop_texts: tuple[str, ...]):
        self.decoder, self.stop_texts = TextDecoder(tok), stop_texts
        self.held, self.stopped = "", False

    def add(self, token: int) -> str:
        return self.cut(self.decoder.add(token))

    def finish(self) -> str:
        piece = self.cut(self.decoder.finish())
        rest, self.held = self.held, ""
        return piece + ("" if self.stopped else rest)

    def cut(self, piece: str) -> str:
        if self.stopped or not self.stop_texts:
            return "" if self.stopped else piece
        text = self.held + piece
        starts = [text.find(stop) for stop in self.stop_texts if stop in text]
        if starts:
            self.stopped, self.held = True, ""
            return text[: min(starts)]
        keep = max((n for stop in self.stop_texts for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]


def split_system(messages: list[dict]) -> tuple[str, list[dict]]:
    """A leading system message apart from the turns, so cutting old turns to fit never drops it."""
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return "", messages


def latest(messages: list[dict], limit: int) -> list[dict]:
    """The last `limit` messages or fewer, starting where fit_prompt's dropping of pairs would (an even cut)."""
    cut = max(0, len(messages) - limit)
    return messages[cut + cut % 2:] if cut else messages


def resent_after(request: ChatRequest, already: int) -> ChatRequest:
    """The same request, whose text events skip the first `already` characters (sent by the failed batch)."""
    skip = [already]

    def emit(event: dict | None) -> None:
        if event is not None and "text" in event and skip[0]:
            text, skip[0] = event["text"][skip[0]:], max(0, skip[0] - len(event["text"]))
            if not text:
                return
            event = {"text": text}
        request.emit(event)

    return ChatRequest(request.messages, request.params, emit, request.gone, request.seed, request.stop_texts)


@dataclass
class ChatModel:
    """The language model the chat page and the API talk to, and the lock every use of it takes."""

    model: GPT
    tok: Tokenizer
    lock: threading.Lock
    seed: int = 0
    defaults: dict = field(default_factory=lambda: {"temperature": 1.0, "top_k": 0, "max_new_tokens": 64})

    def __post_init__(self) -> None:
        self.replies = itertools.count()  # each reply its own seed: a server run replays the same
        self.batches = ChatBatcher(self.model, self.tok, self.lock)

    def answer(self, messages: list[dict] | str, params: SamplingParams, emit: Emit, gone: threading.Event,
               seed: int | None = None, stop_texts: tuple[str, ...] = ()) -> None:
        """Queue one reply: its text is emitted piece by piece, then the end; `None` closes the stream. The
        reply draws from its own seeded generator (`seed`, or the server's next), so sharing a batch does not
        change what it samples."""
        if seed is None:
            seed = self.seed * 1_000_003 + next(self.replies)
        self.batches.submit(ChatRequest(messages, params, emit, gone, seed, stop_texts))


@dataclass(frozen=True)
class Ask:
    """One reply asked of a ChatModel: what ChatModel.answer takes, less where its events go."""

    messages: list[dict] | str
    params: SamplingParams
    seed: int | None = None
    stop_texts: tuple[str, ...] = ()


def reply_stream(chat: ChatModel, asks: list[Ask]) -> AsyncIterator[tuple[int, dict]]:
    """The replies' events as (which ask, event) pairs in the running event loop, until every reply has ended.
    All are queued now, so a full queue (QueueFull) is an answer before any stream starts; closing the stream
    (its reader left) ends every reply at its next token."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    def emitter(index: int) -> Emit:
        def emit(event: dict | None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (index, event))
            except RuntimeError:  # the server is shutting down and its loop is closed
                gone.set()

        return emit

    try:
        for index, ask in enumerate(asks):
            chat.answer(ask.messages, ask.params, emitter(index), gone, ask.seed, ask.stop_texts)
    except QueueFull:
        gone.set()  # those already queued end unread
        raise
    return until_all_closed(events, gone, len(asks))


async def until_all_closed(events: asyncio.Queue, gone: threading.Event, streams: int) -> AsyncIterator[tuple[int, dict]]:
    try:
        while streams:
            index, event = await events.get()
            if event is None:
                streams -= 1
            else:
                yield index, event
    finally:
        gone.set()
