"""Preference pairs for the reward model and DPO: a prompt, a preferred reply and a rejected one.

Reads the TRL / UltraFeedback `{prompt, chosen, rejected}` shape ("pairs") and Anthropic HH-RLHF
transcripts ("hh"), with the same sources and error rules as `llm.data.conversations`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llm.data.conversations import parse_hh_transcript
from llm.data.records import MalformedRecord, check_messages, read_records, text_field
from llm.errors import DataError
from llm.settings_checks import PREFERENCE_FORMATS


@dataclass
class PreferencePair:
    prompt: list[dict]        # the conversation up to (not including) the final assistant reply
    chosen: str               # preferred final assistant reply
    rejected: str
    kind: str = ""            # optional label (e.g. rejection kind of built-in pairs)
    chosen_complete: bool = True     # False: the reply was cut and must be rendered without end-of-turn
    rejected_complete: bool = True
    group: str = ""           # pairs from one ranking share its id: batched together, weighted to count once


@dataclass
class PreferenceStats:
    """Counts for the log: every record read is kept, malformed, identical or empty."""
    records: int = 0
    kept: int = 0
    skipped_malformed: int = 0
    dropped_identical: int = 0
    dropped_empty: int = 0
    errors: list[str] = field(default_factory=list)  # the first few error lines


def split_shared_prompt(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], str, str]:
    """Split two conversations that differ only in their final reply into (prompt, chosen, rejected).

    The prompt is the longest common prefix of turns, stopped before the last turn of either side.
    What remains of each side must be assistant turns only; several are joined with a blank line
    (HH-RLHF sometimes splits one reply over two "Assistant:" markers). Raises ValueError otherwise,
    or when no shared turn is left for the prompt.
    """
    for side, conversation in (("chosen", chosen), ("rejected", rejected)):
        if not conversation or conversation[-1]["role"] != "assistant":
            raise ValueError(f"{side} does not end with an assistant reply")
    shared = 0
    limit = min(len(chosen), len(rejected)) - 1
    while shared < limit and _same_turn(chosen[shared], rejected[shared]):
        shared += 1
    if shared == 0:
        raise ValueError("chosen and rejected share no prompt turn")
    replies = []
    for side, conversation in (("chosen", chosen), ("rejected", rejected)):
        rest = conversation[shared:]
        if any(message["role"] != "assistant" for message in rest):
            raise ValueError(f"chosen and rejected differ before the final reply (turn {shared}); "
                             f"{side} goes on with {[message['role'] for message in rest]}")
        replies.append("\n\n".join(message["content"].strip() for message in rest))
    return chosen[:shared], replies[0], replies[1]


def _same_turn(left: dict, right: dict) -> bool:
    return left["role"] == right["role"] and left["content"].strip() == right["content"].strip()


def _reply_and_context(record: dict, key: str) -> tuple[str, list[dict] | None]:
    """The reply text at `record[key]` and, for a message list, the turns before it."""
    value = record.get(key)
    if isinstance(value, list):
        messages = check_messages(value, key)
        if not messages or messages[-1]["role"] != "assistant":
            raise MalformedRecord(f"field {key!r} must end with an assistant message")
        return messages[-1]["content"], messages[:-1]
    return text_field(record, key).strip(), None


def _prompt(record: dict) -> list[dict] | None:
    value = record.get("prompt")
    if value is None:
        return None
    if isinstance(value, list):
        return check_messages(value, "prompt")
    return [{"role": "user", "content": text_field(record, "prompt").strip()}]


def _pairs(record: dict) -> PreferencePair:
    prompt = _prompt(record)
    chosen, chosen_context = _reply_and_context(record, "chosen")
    rejected, rejected_context = _reply_and_context(record, "rejected")
    if prompt is not None:
        # UltraFeedback repeats the prompt inside chosen/rejected: the given prompt wins.
        return PreferencePair(prompt, chosen, rejected)
    if chosen_context is None or rejected_context is None:
        raise MalformedRecord("no 'prompt' field, and chosen/rejected are not message lists to take it from")
    try:
        prompt, chosen, rejected = split_shared_prompt(chosen_context + [_assistant(chosen)],
                                                       rejected_context + [_assistant(rejected)])
    except ValueError as err:
        raise MalformedRecord(str(err)) from None
    return PreferencePair(prompt, chosen, rejected)


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def _hh(record: dict) -> PreferencePair:
    sides = {}
    for key in ("chosen", "rejected"):
        try:
            sides[key] = parse_hh_transcript(text_field(record, key))
        except MalformedRecord:
            raise
        except ValueError as err:
            raise MalformedRecord(f"field {key!r}: {err}") from None
    try:
        prompt, chosen, rejected = split_shared_prompt(sides["chosen"], sides["rejected"])
    except ValueError as err:
        raise MalformedRecord(str(err)) from None
    return PreferencePair(prompt, chosen, rejected)


PREFERENCE_PARSERS = {"pairs": _pairs, "hh": _hh}


def detect_preference_format(record: dict) -> str:
    """Name the preference format a record fits: message lists or a prompt mean "pairs"."""
    keys = set(record)
    if {"chosen", "rejected"} <= keys:
        if "prompt" in keys or isinstance(record["chosen"], list):
            return "pairs"
        return "hh"
    raise DataError(f"no preference format fits keys {sorted(keys)}; expected 'chosen' and 'rejected' "
                    f"(formats {', '.join(PREFERENCE_FORMATS)}): pass format= explicitly")


def load_preferences(source: str, format: str = "auto", on_error: str = "skip",
                     split: str | None = None) -> tuple[list[PreferencePair], PreferenceStats]:
    """Read preference pairs from a .jsonl(.gz)/.json file, a `save_to_disk` folder or a dataset name.

    Malformed records are counted (`on_error="skip"`) or raise DataError naming `file:line`; pairs
    with an empty reply, or the same reply on both sides, teach nothing and are dropped and counted.
    """
    stats = PreferenceStats()
    pairs = []
    for _, pair in read_records(source, split, format, on_error, stats, detect_preference_format, PREFERENCE_PARSERS):
        if not pair.chosen or not pair.rejected:
            stats.dropped_empty += 1
        elif pair.chosen == pair.rejected:
            stats.dropped_identical += 1
        else:
            pairs.append(pair)
    stats.kept = len(pairs)
    return pairs, stats
