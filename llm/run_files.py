"""The small JSON and text files a run folder holds: written atomically, read tolerantly.

A reader may look while a run is writing (the report, the pipeline, a resumed run), so writes go to a
temporary file renamed into place, and reads treat a missing or half-written file as absent.
"""

from __future__ import annotations

import json
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, record) -> None:
    write_text(path, json.dumps(record, indent=2))


def read_json(path: Path) -> dict | None:
    """The file's JSON, or None when it is missing or does not parse."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a line that does not parse (cut short by a kill) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict)]
