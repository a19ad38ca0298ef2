"""The OpenAI-compatible API beside the pages, so any standard client (the `openai` package, curl) talks to any
stage's checkpoint, mounted under /v1 by llm/feedback/web.py:

    GET  /v1/models                  the one model this server runs (the checkpoint's run name)
    POST /v1/chat/completions        chat.completion, or chat.completion.chunk events with "stream": true
    POST /v1/completions             text_completion: the prompt's plain continuation (for a pre-trained model)

The wire format is OpenAI's: ids, `created`, choices with finish_reason "stop" (a stop token or stop text)
or "length", usage (in a stream only with stream_options.include_usage, as a last chunk with no choices),
server-sent events ended by `data: [DONE]`, and errors as {"error": {message, type, param, code}}.

Replies go through the chat page's ChatBatcher, under its limits: the body limit, the conversation cut to fit
the context (usage counts the prompt as fitted), the bounded queue (429), a reply that ends when its client
hangs up. Sampling: temperature, top_p, top_k and ignore_eos (extensions, as vLLM names them), max_tokens
or max_completion_tokens (default: the server's --max-new-tokens), n (up to MAX_CHOICES, decoded in one
batch), stop, seed (each choice i draws from seed + i; without one, the server's next seeds). Fields a client
commonly sends that this server has no use for are accepted at their neutral value and refused at any other;
any other field is refused by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llm.chat import chat_sampling, text_sampling
from llm.feedback.chat_batches import Ask, ChatModel, QueueFull, reply_stream
from llm.feedback.guard import openai_error
from llm.feedback.request_fields import BadRequest, checked_sampling, json_object, typed
from llm.generate import SamplingParams

MAX_CHOICES = 8  # n: the batcher decodes up to 8 replies at once
MAX_STOP_TEXTS = 4  # as OpenAI allows
SERVER_FAILED = "the server failed to answer (its log has the details)"
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls"})  # no bearing on the reply
# fields with no use here: accepted at null or the value that changes nothing, refused at any other
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "top_logprobs": 0, "logit_bias": {},
           "echo": False, "best_of": 1, "suffix": "", "tools": [], "tool_choice": "none",
           "response_format": {"type": "text"}, "modalities": ["text"]}
SAMPLING_FIELDS = {"model", "stream", "stream_options", "temperature", "top_p", "top_k", "ignore_eos", "max_tokens",
                   "max_completion_tokens", "n", "stop", "seed"}
CHAT_FIELDS = SAMPLING_FIELDS | {"messages"}
TEXT_FIELDS = SAMPLING_FIELDS | {"prompt"}
ROLES = ("system", "developer", "user", "assistant")  # developer is OpenAI's newer name for system


@dataclass(frozen=True)
class Settings:
    """What a completion request asks, read and checked before anything is queued."""

    params: SamplingParams
    n: int
    stop_texts: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


def api_app(chat: ChatModel, model_id: str) -> Starlette:
    """The /v1 routes over `chat`; `model_id` is the one name a request may give as its model."""

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card(model_id)]})

    def completions(kind: str, fields: set[str], prompt_of: Callable[[dict], list[dict] | str], params_of) -> Callable:
        async def endpoint(request: Request) -> Response:
            body = await json_object(request)
            check_fields(body, fields, model_id)
            prompt = prompt_of(body)
            return await answer(request, chat, prompt, read_settings(body, chat, params_of), Reply(kind, model_id))

        return endpoint

    chat_reply = completions("chat.completion", CHAT_FIELDS, chat_messages, partial(chat_sampling, chat.tok))
    text_reply = completions("text_completion", TEXT_FIELDS, text_prompt, partial(text_sampling, chat.tok))
    routes = [Route("/models", models), Route("/chat/completions", chat_reply, methods=["POST"]),
              Route("/completions", text_reply, methods=["POST"])]
    handlers = {BadRequest: bad_request, HTTPException: no_route, Exception: server_failed}
    return Starlette(routes=routes, exception_handlers=handlers)


def model_card(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "llm"}


# ---- errors, in the API's shape ----

async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    return JSONResponse(openai_error(exc.status, str(exc), exc.param, exc.code), exc.status)


async def no_route(request: Request, exc: HTTPException) -> JSONResponse:
    return JSONResponse(openai_error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}"), exc.status_code)


async def server_failed(request: Request, exc: Exception) -> JSONResponse:
    # the exception goes to the server's log (Starlette re-raises it there), never to the client
    return JSONResponse(openai_error(500, SERVER_FAILED), 500)


# ---- reading a request ----

def check_fields(body: dict, known: set[str], model_id: str) -> None:
    for name in body:
        if name in NEUTRAL:
            if body[name] is not None and body[name] != NEUTRAL[name]:
                raise BadRequest(f"field '{name}' is not supported by this server; leave it out or give "
                                 f"{json.dumps(NEUTRAL[name])}; got {json.dumps(body[name])[:60]}", param=name)
        elif name not in known and name not in IGNORED:
            raise BadRequest(f"unrecognized field '{name}'", param=name)
    model = typed(body, "model", str)
    if model != model_id:
        raise BadRequest(f"the model '{model[:60]}' does not exist; this server runs '{model_id}'", 404, "model",
                         "model_not_found")


def chat_messages(body: dict) -> list[dict]:
    """The conversation as the chat template takes it: an optional system message first, then turns ending in the user's."""
    messages = typed(body, "messages", list)
    read = [{"role": message_role(m, i), "content": message_text(m, i)} for i, m in enumerate(messages)]
    if not read or read[-1]["role"] != "user":
        raise BadRequest("the last message must be the user's", param="messages")
    if any(m["role"] == "system" for m in read[1:]):
        raise BadRequest("a system (or developer) message may only come first", param="messages")
    return read


def message_role(message, i: int) -> str:
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ROLES:
        raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {json.dumps(role)[:40]}", param=f"messages[{i}].role")
    return "system" if role == "developer" else role


def message_text(message: dict, i: int) -> str:
    """A message's content: text, or a list of text parts (joined); any other part is refused."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                         for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest(f"messages[{i}].content must be text or a list of text parts", param=f"messages[{i}].content")


def text_prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # the client's list of one prompt; several in one request are not supported
    if not isinstance(prompt, str):
        raise BadRequest("field 'prompt' must be one text (a list of several, or of token ids, is not supported)", param="prompt")
    return prompt


def read_settings(body: dict, chat: ChatModel, params_of: Callable[[int, float, int, float], SamplingParams]) -> Settings:
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise BadRequest("give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
    length_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    fields = {"temperature": ("temperature", optional(body, "temperature", (int, float), 1.0)),
              "top_p": ("top_p", optional(body, "top_p", (int, float), 1.0)),
              "top_k": ("top_k", optional(body, "top_k", int, 0)),
              "max_new_tokens": (length_name, optional(body, length_name, int, chat.defaults["max_new_tokens"]))}
    checked_sampling(fields)
    n = optional(body, "n", int, 1)
    if not 1 <= n <= MAX_CHOICES:
        raise BadRequest(f"field 'n' must be in [1, {MAX_CHOICES}]; got {n}", param="n")
    stream = optional(body, "stream", bool, False)
    options = optional(body, "stream_options", dict, {})
    if options and not stream:
        raise BadRequest("field 'stream_options' is only allowed with \"stream\": true", param="stream_options")
    values = {setting: value for setting, (_, value) in fields.items()}
    params = params_of(values["max_new_tokens"], float(values["temperature"]), values["top_k"], float(values["top_p"]))
    if optional(body, "ignore_eos", bool, False):  # vLLM's extension: every reply max_tokens long, for load tests
        params = replace(params, stop_ids=())
    seed = optional(body, "seed", int, None)
    if seed is not None and not 0 <= seed < 2**63 - MAX_CHOICES:  # choice i draws from seed + i, a torch seed
        raise BadRequest(f"field 'seed' must be in [0, 2**63 - {MAX_CHOICES}); got {seed}", param="seed")
    return Settings(params, n, stop_texts(body), seed, stream, optional(options, "include_usage", bool, False))


def optional(body: dict, name: str, kind, default):
    """body[name] of `kind`, where a missing field and null both mean the default."""
    return default if body.get(name) is None else typed(body, name, kind)


def stop_texts(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not (isinstance(stops, list) and len(stops) <= MAX_STOP_TEXTS and all(isinstance(s, str) and s for s in stops)):
        raise BadRequest(f"field 'stop' must be a text or a list of up to {MAX_STOP_TEXTS} texts, none empty", param="stop")
    return tuple(stops)


# ---- answering ----

@dataclass
class Reply:
    """What the response objects of one request share: their kind, id, time and model."""

    kind: str  # chat.completion or text_completion
    model: str
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self, kind: str) -> dict:
        prefix = "chatcmpl" if self.kind == "chat.completion" else "cmpl"
        return {"id": f"{prefix}-{self.id}", "object": kind, "created": self.created, "model": self.model}

    def choice(self, index: int, text: str | None, finish_reason: str | None) -> dict:
        """One choice, less the chat's message or delta, which the caller adds."""
        choice = {"index": index, "logprobs": None, "finish_reason": finish_reason}
        return {**choice, "text": text or ""} if self.kind == "text_completion" else choice


async def answer(request: Request, chat: ChatModel, prompt: list[dict] | str, settings: Settings, reply: Reply) -> Response:
    seeds = [None if settings.seed is None else settings.seed + i for i in range(settings.n)]
    asks = [Ask(prompt, settings.params, seed, settings.stop_texts) for seed in seeds]
    try:
        events = reply_stream(chat, asks)
    except QueueFull:
        raise BadRequest("the server is busy with other replies; try again in a moment", 429) from None
    if settings.stream:
        return StreamingResponse(sse(stream_chunks(events, reply, settings)), media_type="text/event-stream")
    choices = await unless_gone(request, collect(events, settings.n))
    if choices is None:
        return Response(status_code=204)  # nobody is reading: the replies ended at their next token
    return JSONResponse(whole_reply(reply, choices))


@dataclass
class Choice:
    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def end(self, event: dict) -> None:
        self.finish_reason = "stop" if event["finished"] else "length"
        self.prompt_tokens, self.completion_tokens = event["prompt_tokens"], event["completion_tokens"]


async def collect(events: AsyncIterator[tuple[int, dict]], n: int) -> list[Choice]:
    choices = [Choice() for _ in range(n)]
    async with contextlib.aclosing(events):
        async for index, event in events:
            if "error" in event:
                raise BadRequest(event["error"], 500)
            if "text" in event:
                choices[index].text += event["text"]
            else:
                choices[index].end(event)
    return choices


async def unless_gone(request: Request, work) -> list[Choice] | None:
    """`work`'s result, or None as soon as the client hangs up (the work is then cancelled, which closes its
    stream of events, so its replies end at their next token instead of holding the model for nobody)."""
    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(hung_up(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def hung_up(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def usage(choices: list[Choice]) -> dict:
    prompt = choices[0].prompt_tokens  # every choice answers the same prompt
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def whole_reply(reply: Reply, choices: list[Choice]) -> dict:
    listed = []
    for index, c in enumerate(choices):
        choice = reply.choice(index, c.text, c.finish_reason)
        if reply.kind == "chat.completion":
            choice["message"] = {"role": "assistant", "content": c.text}
        listed.append(choice)
    return {**reply.head(reply.kind), "choices": listed, "usage": usage(choices)}


async def stream_chunks(events: AsyncIterator[tuple[int, dict]], reply: Reply, settings: Settings) -> AsyncIterator[dict]:
    """The replies as chunk objects: a chat stream opens each choice with its role, every piece of text is
    a chunk, each choice ends with a chunk naming its finish_reason, and usage (when asked) comes last."""
    kind = "chat.completion.chunk" if reply.kind == "chat.completion" else "text_completion"
    chunk = lambda choices: {**reply.head(kind), "choices": choices, **({"usage": None} if settings.include_usage else {})}  # noqa: E731
    choices = [Choice() for _ in range(settings.n)]
    if kind == "chat.completion.chunk":
        for index in range(settings.n):
            yield chunk([{**reply.choice(index, None, None), "delta": {"role": "assistant", "content": ""}}])
    async with contextlib.aclosing(events):
        async for index, event in events:
            if "error" in event:
                yield {"error": openai_error(500, event["error"])["error"]}
                return
            if "done" in event:
                choices[index].end(event)
            text = event.get("text")
            piece = reply.choice(index, text, choices[index].finish_reason)
            if kind == "chat.completion.chunk":
                piece["delta"] = {"content": text} if text is not None else {}
            yield chunk([piece])
    if settings.include_usage:
        yield {**reply.head(kind), "choices": [], "usage": usage(choices)}


async def sse(chunks: AsyncIterator[dict]) -> AsyncIterator[str]:
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
