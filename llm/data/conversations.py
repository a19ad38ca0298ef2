"""Chat data for SFT: read records from a file, a saved dataset or a `datasets` name into conversations.

A conversation is a list of messages `{"role": "system"|"user"|"assistant", "content": str}`.
Records are read by `llm.data.records`, which also serves the preference loader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llm.data.records import MalformedRecord, check_messages, list_field, read_records, text_field
from llm.errors import DataError
from llm.settings_checks import CONVERSATION_FORMATS

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
# HH-RLHF transcripts mark turns with a blank line and a speaker tag; anything else is turn text.
HH_MARKER = re.compile(r"\n\n(Human|Assistant):")


@dataclass
class LoadStats:
    """Counts for the log. `records` counts records read; `kept` and `skipped_empty` count
    conversations, which differ from records for alpaca_seed (one conversation per instance)."""
    records: int = 0
    kept: int = 0
    skipped_malformed: int = 0
    skipped_empty: int = 0
    errors: list[str] = field(default_factory=list)  # the first MAX_LOGGED_ERRORS messages


# ---------------------------------------------------------------------------------------------
# Conversation formats: each parser returns a list of conversations (alpaca_seed: one per instance)


def parse_hh_transcript(text: str) -> list[dict]:
    """Split an HH-RLHF transcript `"\\n\\nHuman: ...\\n\\nAssistant: ..."` into user/assistant messages.

    Leading whitespace is forgiven (a transcript may start at "Human:"); text before the first
    marker is not. Raises ValueError when there are no markers or the first turn is not Human.
    """
    parts = HH_MARKER.split("\n\n" + text.lstrip())
    if len(parts) < 3:
        raise ValueError("no '\\n\\nHuman:' / '\\n\\nAssistant:' turn markers")
    if parts[0].strip() or parts[1] != "Human":
        raise ValueError("transcript does not start with a '\\n\\nHuman:' turn")
    speakers, contents = parts[1::2], parts[2::2]
    return [{"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
            for speaker, content in zip(speakers, contents)]


def _messages(record: dict) -> list[list[dict]]:
    return [check_messages(list_field(record, "messages"))]


def _alpaca_turns(instruction: str, input_text: str, output: str) -> list[dict]:
    prompt = instruction.strip()
    if input_text.strip():
        prompt += "\n\n" + input_text.strip()
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output.strip()}]


def _alpaca(record: dict) -> list[list[dict]]:
    return [_alpaca_turns(text_field(record, "instruction"), text_field(record, "input", optional=True),
                          text_field(record, "output"))]


def _alpaca_seed(record: dict) -> list[list[dict]]:
    instruction = text_field(record, "instruction")
    instances = list_field(record, "instances")
    if not instances:
        raise MalformedRecord("field 'instances' is empty")
    conversations = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise MalformedRecord(f"instances[{index}] must be an object, got {type(instance).__name__}")
        try:
            conversations.append(_alpaca_turns(instruction, text_field(instance, "input", optional=True),
                                               text_field(instance, "output")))
        except MalformedRecord as err:
            raise MalformedRecord(f"instances[{index}]: {err}") from None
    return conversations


def _sharegpt(record: dict) -> list[list[dict]]:
    conversation = []
    for index, turn in enumerate(list_field(record, "conversations")):
        if not isinstance(turn, dict):
            raise MalformedRecord(f"conversations[{index}] must be an object, got {type(turn).__name__}")
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            raise MalformedRecord(f"conversations[{index}]: 'from' {speaker!r} is not one of "
                                  f"{', '.join(SHAREGPT_ROLES)}")
        try:
            content = text_field(turn, "value")
        except MalformedRecord as err:
            raise MalformedRecord(f"conversations[{index}]: {err}") from None
        conversation.append({"role": SHAREGPT_ROLES[speaker], "content": content.strip()})
    return [conversation]


def _hh(record: dict) -> list[list[dict]]:
    try:
        return [parse_hh_transcript(text_field(record, "chosen"))]
    except MalformedRecord:
        raise
    except ValueError as err:
        raise MalformedRecord(f"field 'chosen': {err}") from None


CONVERSATION_PARSERS = {"messages": _messages, "alpaca": _alpaca, "sharegpt": _sharegpt, "hh": _hh,
                        "alpaca_seed": _alpaca_seed}


def detect_format(record: dict) -> str:
    """Name the conversation format a record's keys fit; DataError when none does."""
    keys = set(record) if isinstance(record, dict) else set()
    if "messages" in keys:
        return "messages"
    if "conversations" in keys:
        return "sharegpt"
    # "instruction" alone decides, so a record missing "output" is reported as malformed alpaca.
    if "instruction" in keys:
        return "alpaca_seed" if "instances" in keys else "alpaca"
    if "chosen" in keys:
        return "hh"
    raise DataError(f"no conversation format fits keys {sorted(keys)}; expected one of "
                    f"{', '.join(CONVERSATION_FORMATS)}: pass format= explicitly")


def trim_to_last_reply(conversation: list[dict]) -> list[dict]:
    """Cut turns after the last non-empty assistant reply; [] when there is none.

    Turns after it carry no training target, and an empty final reply would teach the model to end
    its turn at once (a few HH-RLHF transcripts end with an empty "Assistant:").
    """
    for end in range(len(conversation), 0, -1):
        message = conversation[end - 1]
        if message["role"] == "assistant" and message["content"]:
            return conversation[:end]
    return []


def load_conversations(source: str, format: str = "auto", on_error: str = "skip",
                       split: str | None = None) -> tuple[list[list[dict]], LoadStats]:
    """Read SFT conversations from a .jsonl(.gz)/.json file, a `save_to_disk` folder or a dataset name.

    Malformed records are counted and logged in the stats (`on_error="skip"`) or raise DataError
    naming `file:line` (`"raise"`); conversations with no non-empty assistant reply are skipped.
    """
    stats = LoadStats()
    conversations = []
    for _, parsed in read_records(source, split, format, on_error, stats, detect_format, CONVERSATION_PARSERS):
        for conversation in parsed:
            trimmed = trim_to_last_reply(conversation)
            if trimmed:
                conversations.append(trimmed)
            else:
                stats.skipped_empty += 1
    stats.kept = len(conversations)
    return conversations, stats
