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
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch

from llm.chat import fit_prompt
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
    """One reply to generate: `emit` gets {"text": piece}s, then {"done": ...} or {"error": ...}, then None."""

    messages: list[dict]
    params: SamplingParams
    emit: Emit
    gone: threading.Event  # set when the page stopped reading: the row ends at its next token
    seed: int


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
        decoders = [TextDecoder(self.tok) for _ in batch]

        def on_token(row: int, token: int) -> bool:
            if batch[row].gone.is_set():
                return True  # its page left: end this row, and the batch once every row has ended
            piece = decoders[row].add(token)
            if piece:
                batch[row].emit({"text": piece})
                sent[row] += len(piece)
            return False

        device = next(self.model.parameters()).device
        block_size = self.model.config.block_size
        prompts = [fit_prompt(self.tok, latest(r.messages, block_size), block_size, r.params.max_new_tokens) for r in batch]
        generators = [torch.Generator(device=device).manual_seed(r.seed) for r in batch]
        with torch.inference_mode():
            out = generate(self.model, prompts, [r.params for r in batch], self.tok.pad_id,
                           generator=generators, on_token=on_token)
        for request, decoder, finished in zip(batch, decoders, out.finished):
            if request.gone.is_set():
                continue
            tail = decoder.finish()
            if tail:
                request.emit({"text": tail})
            request.emit({"done": True, "finished": finished})


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

    return ChatRequest(request.messages, request.params, emit, request.gone, request.seed)
