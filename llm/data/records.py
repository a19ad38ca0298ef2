"""Reading data records from a JSONL/JSON file, a saved dataset or a `datasets` name, one error rule for all.

Every record comes with where it was read (`path:line`, `path[record i]` or `source[row i]`), so a
malformed one is reported on one line naming its place, then skipped and counted or raised, as the
caller chose. Used by the SFT (`conversations`) and preference (`preferences`) loaders.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
from collections.abc import Callable, Iterator
from typing import Any

from llm.errors import ConfigError, DataError
from llm.run_files import BadLine, jsonl_lines

ROLES = ("system", "user", "assistant")
ON_ERROR_CHOICES = ("skip", "raise")
MAX_LOGGED_ERRORS = 10
FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def split_train_val(items: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded shuffle holds out `val_fraction` of the items (at least one, when there are two or more)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(items) * val_fraction)) if len(items) > 1 else 0
    val_ids = set(order[:n_val])
    return [x for i, x in enumerate(items) if i not in val_ids], [x for i, x in enumerate(items) if i in val_ids]


class MalformedRecord(ValueError):
    """One record does not fit its format; the reader prefixes the message with `file:line`."""


def iter_records(source: str, split: str | None = None) -> Iterator[tuple[str, Any]]:
    """Yield `(where, record)`; `where` is `path:line` (JSONL), `path[record i]` or `source[row i]`.

    A JSONL line that is not JSON comes as a MalformedRecord instance instead of a record, so that
    the caller decides between skipping and raising and the reading goes on after it.
    """
    path = os.path.expanduser(source)
    if os.path.isfile(path):
        yield from _iter_file(path)
    elif os.path.isdir(path):
        yield from _iter_dataset(source, _load_dataset_folder(path, split))
    elif source.endswith(FILE_SUFFIXES) or source.startswith(("/", ".", "~")):
        raise DataError(f"{source}: no such file or folder")
    else:
        yield from _iter_dataset(source, _load_named_dataset(source, split))


def _iter_file(path: str) -> Iterator[tuple[str, Any]]:
    if not path.endswith(FILE_SUFFIXES):
        raise DataError(f"{path}: unsupported file type; expected one of {', '.join(FILE_SUFFIXES)}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as file:
        if path.endswith((".jsonl", ".jsonl.gz")):
            yield from _iter_jsonl(path, file)
            return
        try:
            data = file.read()
        except (OSError, EOFError) as err:  # a corrupt .gz fails on read, not on open
            raise DataError(f"{path}: cannot read: {err}") from None
    # A .json file may hold a list of records or, as often in the wild, one record per line.
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        yield from _iter_json_list(path, data)
    else:
        yield from _iter_jsonl(path, io.BytesIO(data))


def _iter_jsonl(path: str, file) -> Iterator[tuple[str, Any]]:
    where = f"{path}:1"
    try:
        for where, record in jsonl_lines(path, file):
            yield where, MalformedRecord(record.problem) if isinstance(record, BadLine) else record
    except (OSError, EOFError) as err:  # a truncated or corrupt .gz fails mid-read
        raise DataError(f"{where}: cannot read: {err}") from None


def _iter_json_list(path: str, data: bytes) -> Iterator[tuple[str, Any]]:
    try:
        records = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        # One broken record spoils the whole list: there is no next record to skip to.
        raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    for index, record in enumerate(records):
        yield f"{path}[record {index}]", record


def _load_dataset_folder(path: str, split: str | None):
    import datasets  # slow to import; only saved datasets and hub names need it

    if not any(os.path.exists(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json")):
        return _load_named_dataset(path, split)  # a folder of data files: let `datasets` read it
    try:
        loaded = datasets.load_from_disk(path)
    except Exception as err:  # datasets raises many types; the user needs the one line
        raise DataError(f"{path}: cannot load saved dataset: {_first_line(err)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        name = split or "train"
        if name not in loaded:
            raise DataError(f"{path}: no split {name!r}; the saved dataset has {', '.join(loaded)}")
        return loaded[name]
    return loaded


def _load_named_dataset(source: str, split: str | None):
    import datasets

    name = split or "train"
    try:
        return datasets.load_dataset(source, split=name)
    except Exception as err:  # offline hub, unknown name, bad split: all end the same way for the user
        raise DataError(f"{source}: cannot load dataset (split {name!r}): {_first_line(err)}; "
                        "for a local file check the path") from None


def _iter_dataset(source: str, dataset) -> Iterator[tuple[str, Any]]:
    for index, row in enumerate(dataset):
        yield f"{source}[row {index}]", row


def _first_line(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """A bad `format` / `on_error` given to a loader directly (configs are checked when they load)."""
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def parse_records(source: str, split: str | None, on_error: str, stats,
                  parse: Callable[[dict], Any]) -> Iterator[tuple[str, Any]]:
    """Yield `(where, parse(record))`, counting malformed records in `stats` or raising DataError.

    `stats` needs `records`, `skipped_malformed` and `errors`. `parse` raises MalformedRecord for a
    bad record and DataError (no location) for a file-level problem, such as an unknown format.
    """
    for where, record in iter_records(source, split):
        stats.records += 1
        try:
            if isinstance(record, MalformedRecord):
                raise record
            if not isinstance(record, dict):
                raise MalformedRecord(f"expected a JSON object, got {type(record).__name__}")
            parsed = parse(record)
        except MalformedRecord as err:
            if on_error == "raise":
                raise DataError(f"{where}: {err}") from None
            stats.skipped_malformed += 1
            if len(stats.errors) < MAX_LOGGED_ERRORS:
                stats.errors.append(f"{where}: {err}")
            continue
        except DataError as err:  # parsers do not know where they are: add it here
            raise DataError(f"{where}: {err}") from None
        yield where, parsed


def read_records(source: str, split: str | None, format: str, on_error: str, stats, detect: Callable[[dict], str],
                 parsers: dict[str, Callable[[dict], Any]]) -> Iterator[tuple[str, Any]]:
    """parse_records with the parser `format` names ("auto": detected from the first record)."""
    check_choice("format", format, ("auto", *parsers))
    check_choice("on_error", on_error, ON_ERROR_CHOICES)
    return parse_records(source, split, on_error, stats, auto_parser(format, detect, parsers))


def auto_parser(format: str, detect: Callable[[dict], str],
                parsers: dict[str, Callable[[dict], Any]]) -> Callable[[dict], Any]:
    """A parser for `format`; "auto" fixes the format from the first well-formed JSON object."""
    chosen = format

    def parse(record: dict):
        nonlocal chosen
        if chosen == "auto":
            chosen = detect(record)
        try:
            return parsers[chosen](record)
        except MalformedRecord as err:
            raise MalformedRecord(f"{err} ({chosen} format)") from None

    return parse


def text_field(record: dict, key: str, optional: bool = False) -> str:
    """The string at `record[key]`; optional fields may be absent or null (Arrow fills gaps with None)."""
    value = record.get(key)
    if value is None:
        if optional:
            return ""
        raise MalformedRecord(f"missing field {key!r}")
    if not isinstance(value, str):
        raise MalformedRecord(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def list_field(record: dict, key: str) -> list:
    value = record.get(key)
    if value is None:
        raise MalformedRecord(f"missing field {key!r}")
    if not isinstance(value, list):
        raise MalformedRecord(f"field {key!r} must be a list, got {type(value).__name__}")
    return value


def check_messages(messages: list, key: str = "messages") -> list[dict]:
    """Validate a list of `{role, content}` messages; return copies with stripped content."""
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise MalformedRecord(f"{key}[{index}] must be an object, got {type(message).__name__}")
        if "role" not in message and "from" in message:
            raise MalformedRecord(f"{key}[{index}] has 'from'/'value' keys (sharegpt); "
                                  "expected 'role'/'content'")
        role = message.get("role")
        if role not in ROLES:
            raise MalformedRecord(f"{key}[{index}]: role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise MalformedRecord(f"{key}[{index}]: content must be a string, got {type(content).__name__}")
        checked.append({"role": role, "content": content.strip()})
    return checked


