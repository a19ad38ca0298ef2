"""The small files a run writes and reads: one atomic writer, one JSONL reader.

A reader may look while a run is writing (the report, the pipeline, a resumed run), so writes go to a
temporary file renamed into place, and the run folder's own readers treat a missing or half-written file as
absent. The JSONL reader names each record by `path:line`, so a data file's bad line is reported where it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block ends without an error, so a
    reader sees the old file or the new one, never part of one. The process id keeps torchrun's ranks apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replaced(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, record) -> None:
    write_text(path, json.dumps(record, indent=2))


def read_json(path: Path) -> dict | None:
    """The file's JSON, or None when it is missing or does not parse."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class BadLine(NamedTuple):
    problem: str  # why the line is not a record, for an error that names its path:line


def jsonl_lines(path: str | Path, lines: Iterable[bytes], first: int = 1) -> Iterator[tuple[str, object]]:
    """(`path:line`, record or BadLine) for every non-blank line, numbered from `first`; a byte-order mark at the
    start is allowed."""
    for number, raw in enumerate(lines, start=first):
        where = f"{path}:{number}"
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            yield where, BadLine(f"not UTF-8 text ({err.reason} at byte {err.start})")
            continue
        if not text.strip():
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as err:
            yield where, BadLine(f"not valid JSON: {err.msg} (column {err.colno})")
        except RecursionError:
            yield where, BadLine("JSON nested too deeply")


def read_jsonl(path: Path) -> list[dict]:
    """A run folder's JSONL records; a line that does not parse (cut short by a kill) is skipped."""
    if not path.is_file():
        return []
    with open(path, "rb") as handle:
        return [record for _, record in jsonl_lines(path, handle) if isinstance(record, dict)]
