"""Chat replies decoded together: one worker thread serves every chat request, in batches.

A request waits in a queue; when the model is free (no batch running, the ranking sampler done) the worker
takes every request waiting, up to `max_batch`, and decodes them in one batched `generate` call, each row
with its own settings and its own seeded generator, each streaming its own text. On a GPU one sequence is
bound by kernel launches, so a batch of replies costs about what one does; on the CPU a batch of 8 runs
3-4x the tokens per second of one (docs/benchmarks.md, Sampling).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from llm.chat import fit_prompt
from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.stream import TextDecoder
from llm.tokenizer import Tokenizer

Emit = Callable[[dict | None], None]


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

    def __init__(self, model: GPT, tok: Tokenizer, lock: threading.Lock, max_batch: int = 8):
        self.model, self.tok, self.lock, self.max_batch = model, tok, lock, max_batch
        self.waiting: queue.Queue[ChatRequest] = queue.Queue()
        self.worker: threading.Thread | None = None
        self.starting = threading.Lock()

    def submit(self, request: ChatRequest) -> None:
        self.waiting.put(request)
        with self.starting:  # the worker starts with the first request: a page with no model never needs one
            if self.worker is None:
                self.worker = threading.Thread(target=self.serve, name="chat-batches", daemon=True)
                self.worker.start()

    def serve(self) -> None:
        while True:
            first = self.waiting.get()
            with self.lock:
                self.decode([first, *self.more(self.max_batch - 1)])

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
        decoders = [TextDecoder(self.tok) for _ in batch]

        def on_token(row: int, token: int) -> bool:
            if batch[row].gone.is_set():
                return True  # its page left: end this row, and the batch once every row has ended
            piece = decoders[row].add(token)
            if piece:
                batch[row].emit({"text": piece})
            return False

        device = next(self.model.parameters()).device
        try:
            prompts = [fit_prompt(self.tok, r.messages, self.model.config.block_size, r.params.max_new_tokens) for r in batch]
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
        except Exception as exc:  # shown on every page of the batch; a failed reply must not leave a stream open
            for request in batch:
                request.emit({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            for request in batch:
                request.emit(None)
