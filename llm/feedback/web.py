"""The ranking page and the chat page: a small Starlette app over a RankingSession and a language model.

    GET  /rank, /chat                     the pages (plain files under static/)
    GET  /api/info                        the checkpoint, whether ranking is on, the chat page's starting settings
    GET  /api/rank/current?tab=T          the tab's prompt, its K replies, and the progress
    POST /api/rank/give    {tab, id, ranking, status}   appended to the file (fsynced) before the answer returns
    POST /api/rank/undo    {tab}
    POST /api/rank/prompt  {tab, text}    the person's own prompt becomes the tab's
    POST /api/chat         {messages, temperature, top_k, max_new_tokens}
                           -> newline-delimited JSON: {"text": piece} as tokens arrive, then {"done": true, "finished": bool}

A request the server cannot act on gets a 4xx and {"error": "<one line>"}, never a 500. The model runs in
worker threads, one call at a time under one lock that the chat and the ranking sampler share.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from llm.chat import reply_to
from llm.feedback.replies import sampling_params
from llm.feedback.session import RankingSession
from llm.model import GPT
from llm.settings_checks import BadValue, check_sampling
from llm.stream import TextDecoder
from llm.tokenizer import Tokenizer

STATIC = Path(__file__).parent / "static"
MAX_TAB_CHARS = 100
MAX_NEW_TOKENS = 1024  # one reply holds the model lock while it runs: every other request waits for it
RANKING_OFF = "ranking is off: start the server with --rank FILE to rank replies"


class BadRequest(Exception):
    """A request the server cannot act on; its message is the one line the page shows."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Cancelled(Exception):
    """Raised inside generation when the page stopped reading, so the model is free for the next request."""


@dataclass
class ChatModel:
    """The language model the chat page talks to, and the lock every use of it takes."""

    model: GPT
    tok: Tokenizer
    lock: threading.Lock
    seed: int = 0
    defaults: dict = field(default_factory=lambda: {"temperature": 1.0, "top_k": 0, "max_new_tokens": 64})

    def __post_init__(self) -> None:
        self.replies = itertools.count()  # each reply its own seed: a server run replays the same

    def answer(self, messages: list[dict], params, emit: Callable[[dict | None], None], gone: threading.Event) -> None:
        """Generate one reply, emitting its text piece by piece, then the end; `None` closes the stream."""
        decoder = TextDecoder(self.tok)

        def on_token(token: int) -> None:
            if gone.is_set():
                raise Cancelled
            piece = decoder.add(token)
            if piece:
                emit({"text": piece})

        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + next(self.replies))
        try:
            with self.lock, torch.inference_mode():
                _, finished = reply_to(self.model, self.tok, messages, params, generator, on_token)
            tail = decoder.finish()
            if tail:
                emit({"text": tail})
            emit({"done": True, "finished": finished})
        except Cancelled:
            pass
        except Exception as exc:  # shown on the page; a failed reply must not leave the stream open forever
            emit({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            emit(None)


async def reply_events(chat: ChatModel, messages: list[dict], params) -> AsyncIterator[str]:
    """The reply as newline-delimited JSON, one event per piece of text, generated in a worker thread."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    def emit(event: dict | None) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the server is shutting down and its loop is closed
            gone.set()

    threading.Thread(target=chat.answer, args=(messages, params, emit, gone), daemon=True).start()
    try:
        while (event := await events.get()) is not None:
            yield json.dumps(event, ensure_ascii=False) + "\n"
    finally:
        gone.set()


# ---- reading requests: every wrong shape is a BadRequest naming the field ----

async def json_object(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:  # bad JSON and bad UTF-8 alike
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def typed(body: dict, name: str, kind: type | tuple[type, ...], default=None):
    """body[name], of `kind` (a bool is not a number here); missing is an error unless a default is given."""
    if name not in body:
        if default is None:
            raise BadRequest(f"missing field '{name}'")
        return default
    value, kinds = body[name], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadRequest(f"field '{name}' has the wrong type; got {json.dumps(value)[:60]}")
    return value


def tab_of(value) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TAB_CHARS:
        raise BadRequest(f"a tab id (1 to {MAX_TAB_CHARS} characters) is required; got {json.dumps(value)[:60]}")
    return value


def ranking_of(body: dict) -> list[list[int]]:
    """The shape only (groups of reply numbers); whether it places every reply once, the session checks."""
    ranking = typed(body, "ranking", list, [])
    if not all(isinstance(g, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in g) for g in ranking):
        raise BadRequest(f"field 'ranking' must be a list of lists of reply numbers; got {json.dumps(ranking)[:60]}")
    return ranking


def chat_messages(body: dict) -> list[dict]:
    messages = typed(body, "messages", list)
    for i, message in enumerate(messages):
        if not (isinstance(message, dict) and message.get("role") in ("user", "assistant") and isinstance(message.get("content"), str)):
            raise BadRequest(f"messages[{i}] must be {{\"role\": \"user\" or \"assistant\", \"content\": text}}")
    if not messages or messages[-1]["role"] != "user":
        raise BadRequest("the last message must be the user's")
    return messages


def chat_settings(body: dict, chat: ChatModel) -> tuple[float, int, int]:
    temperature = typed(body, "temperature", (int, float), chat.defaults["temperature"])
    top_k = typed(body, "top_k", int, chat.defaults["top_k"])
    max_new_tokens = typed(body, "max_new_tokens", int, chat.defaults["max_new_tokens"])
    try:
        check_sampling(temperature=temperature, top_k=top_k, max_new_tokens=max_new_tokens)
    except BadValue as exc:
        raise BadRequest(f"field '{exc.key}' {exc.rule}; got {exc.value!r}") from None
    if max_new_tokens > MAX_NEW_TOKENS:
        raise BadRequest(f"field 'max_new_tokens' must be at most {MAX_NEW_TOKENS}; got {max_new_tokens}")
    return float(temperature), top_k, max_new_tokens


async def in_session(method: Callable, *args):
    """A session call in a worker thread (it may sample replies); its ValueError is the person's mistake."""
    try:
        return await run_in_threadpool(method, *args)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


# ---- the routes ----

def rank_routes(session: RankingSession | None) -> list[Route]:
    if session is None:
        async def off(request: Request) -> JSONResponse:
            return JSONResponse({"error": RANKING_OFF}, 404)

        return [Route("/api/rank/{rest:path}", off, methods=["GET", "POST"])]

    async def state(item) -> JSONResponse:
        progress = await run_in_threadpool(session.progress)
        return JSONResponse({"item": item.to_json() if item else None, "progress": progress})

    async def current(request: Request) -> JSONResponse:
        return await state(await in_session(session.current, tab_of(request.query_params.get("tab"))))

    async def give(request: Request) -> JSONResponse:
        body = await json_object(request)
        tab, item_id = tab_of(body.get("tab")), typed(body, "id", str)
        entry = await in_session(session.give, item_id, ranking_of(body), typed(body, "status", str, "ranked"), tab)
        return JSONResponse({"given": entry.id, "status": entry.status, "progress": await run_in_threadpool(session.progress)})

    async def undo(request: Request) -> JSONResponse:
        item = await in_session(session.undo, tab_of((await json_object(request)).get("tab")))
        return JSONResponse({"undone": item is not None})

    async def prompt(request: Request) -> JSONResponse:
        body = await json_object(request)
        return await state(await in_session(session.type_prompt, typed(body, "text", str), tab_of(body.get("tab"))))

    return [Route("/api/rank/current", current), Route("/api/rank/give", give, methods=["POST"]),
            Route("/api/rank/undo", undo, methods=["POST"]), Route("/api/rank/prompt", prompt, methods=["POST"])]


def create_app(chat: ChatModel, session: RankingSession | None = None, checkpoint: str = "") -> Starlette:
    async def info(request: Request) -> JSONResponse:
        return JSONResponse({"checkpoint": checkpoint, "rank": session is not None, "chat": chat.defaults})

    async def reply(request: Request) -> StreamingResponse:
        body = await json_object(request)
        messages = chat_messages(body)
        temperature, top_k, max_new_tokens = chat_settings(body, chat)
        params = sampling_params(chat.tok, max_new_tokens, temperature, top_k, 1.0)
        return StreamingResponse(reply_events(chat, messages, params), media_type="application/x-ndjson")

    async def rank_page(request: Request):
        if session is None:
            return HTMLResponse(f"<!doctype html><title>Ranking off</title><p>{RANKING_OFF}. "
                                "<a href='/chat'>The chat page</a> is on.</p>", 404)
        return FileResponse(STATIC / "rank.html")

    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, exc.status)

    routes = [
        Route("/", lambda request: RedirectResponse("/rank" if session else "/chat")),
        Route("/rank", rank_page),
        Route("/chat", lambda request: FileResponse(STATIC / "chat.html")),
        Route("/api/info", info),
        Route("/api/chat", reply, methods=["POST"]),
        *rank_routes(session),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={BadRequest: bad_request})
