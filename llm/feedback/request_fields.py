"""Reading a request's JSON body, for the pages' API and the OpenAI-compatible one alike: every wrong shape is a
BadRequest naming the field, and the sampling settings are checked against the same limits."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request

from llm.feedback.guard import MAX_BODY_BYTES
from llm.settings_checks import BadValue, check_sampling

MAX_NEW_TOKENS = 1024  # a batch holds the model lock while it runs: a request arriving meanwhile waits for the next
MIN_TEMPERATURE = 1e-2  # below it (but above 0, greedy) logits / temperature overflow to inf and NaN
BODY_TIMEOUT_S = 20.0


class BadRequest(Exception):
    """A request the server cannot act on; its message is the one line the client shows, `param` the field at fault."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


async def body_bytes(request: Request) -> bytes:
    """The body, refused past MAX_BODY_BYTES however it is sent (Content-Length is checked earlier, by the guard)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(f"the request body is over {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request) -> dict:
    try:
        data = await asyncio.wait_for(body_bytes(request), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise BadRequest(f"the request body did not arrive within {BODY_TIMEOUT_S:g} s", 408) from None
    try:
        body = json.loads(data)
        json.dumps(body, ensure_ascii=False).encode()  # a lone surrogate ("\\ud800") parses but is no text
    except (ValueError, UnicodeError):  # bad JSON and bad UTF-8 alike
        raise BadRequest("the request body is not valid JSON in UTF-8") from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def typed(body: dict, name: str, kind: type | tuple[type, ...], default=None):
    """body[name], of `kind` (a bool is not a number here); missing is an error unless a default is given."""
    if name not in body:
        if default is None:
            raise BadRequest(f"missing field '{name}'", param=name)
        return default
    value, kinds = body[name], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadRequest(f"field '{name}' has the wrong type; got {json.dumps(value)[:60]}", param=name)
    return value


def checked_sampling(fields: dict[str, tuple[str, float]]) -> None:
    """Sampling settings against the one rule book and the server's own limits; `fields` maps each setting
    (temperature, top_k, top_p, max_new_tokens) to (the request's name for it, its value), so an error names
    the field as the client spelled it."""
    try:
        check_sampling(**{setting: value for setting, (_, value) in fields.items()})
    except BadValue as exc:
        name = fields[exc.key][0]
        raise BadRequest(f"field '{name}' {exc.rule}; got {exc.value!r}", param=name) from None
    name, value = fields["max_new_tokens"]
    if value > MAX_NEW_TOKENS:
        raise BadRequest(f"field '{name}' must be at most {MAX_NEW_TOKENS}; got {value}", param=name)
    name, value = fields["temperature"]
    if 0 < value < MIN_TEMPERATURE:
        raise BadRequest(f"field '{name}' must be 0 (greedy) or at least {MIN_TEMPERATURE:g}; got {value!r}", param=name)
