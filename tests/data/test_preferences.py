"""Preference pair loading: TRL/UltraFeedback pairs, HH-RLHF transcripts, shared prompts, drops."""

import gzip
import json

import pytest

from llm.data.preferences import PreferencePair, load_preferences, split_shared_prompt
from llm.errors import ConfigError, DataError


def write_lines(path, items):
    """Write records as JSON lines; a str item is written verbatim (for broken lines)."""
    text = "".join((item if isinstance(item, str) else json.dumps(item)) + "\n" for item in items)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as file:
            file.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def hh(*turns):
    """An HH transcript from alternating Human/Assistant texts, Human first."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {text}" for i, text in enumerate(turns))


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def test_pairs_with_string_fields(tmp_path):
    record = {"prompt": " Capital of France? ", "chosen": "Paris.", "rejected": "Rome."}
    path = write_lines(tmp_path / "p.jsonl", [record])
    pairs, stats = load_preferences(path, format="pairs")
    assert pairs == [PreferencePair([user("Capital of France?")], "Paris.", "Rome.")]
    assert (stats.records, stats.kept) == (1, 1)


def test_pairs_ultrafeedback_shape_takes_last_assistant_reply(tmp_path):
    record = {"prompt": "q", "chosen": [user("q"), assistant("good")],
              "rejected": [user("q"), assistant("bad")]}
    pairs, _ = load_preferences(write_lines(tmp_path / "uf.jsonl", [record]))
    assert pairs == [PreferencePair([user("q")], "good", "bad")]


def test_pairs_without_prompt_use_the_shared_turns(tmp_path):
    record = {"chosen": [user("q1"), assistant("a1"), user("q2"), assistant("good")],
              "rejected": [user("q1"), assistant("a1"), user("q2"), assistant("bad")]}
    pairs, _ = load_preferences(write_lines(tmp_path / "implicit.jsonl", [record]))
    assert pairs[0].prompt == [user("q1"), assistant("a1"), user("q2")]
    assert (pairs[0].chosen, pairs[0].rejected) == ("good", "bad")


def test_pairs_conversational_prompt_list(tmp_path):
    record = {"prompt": [{"role": "system", "content": "sys"}, user("q")],
              "chosen": [assistant("good")], "rejected": [assistant("bad")]}
    pairs, _ = load_preferences(write_lines(tmp_path / "conv.jsonl", [record]))
    assert pairs == [PreferencePair([{"role": "system", "content": "sys"}, user("q")], "good", "bad")]


def test_hh_records_split_into_prompt_and_replies(tmp_path):
    record = {"chosen": hh("Hi", "Hello!", "Help me?", "Sure."),
              "rejected": hh("Hi", "Hello!", "Help me?", "No.")}
    pairs, stats = load_preferences(write_lines(tmp_path / "hh.jsonl.gz", [record]))
    assert pairs == [PreferencePair([user("Hi"), assistant("Hello!"), user("Help me?")], "Sure.", "No.")]
    assert stats.kept == 1


def test_split_shared_prompt_on_a_two_turn_example():
    chosen = [user("How do I bake bread?"), assistant("Mix flour, water, yeast.")]
    rejected = [user("How do I bake bread?"), assistant("Buy some.")]
    assert split_shared_prompt(chosen, rejected) == ([user("How do I bake bread?")],
                                                     "Mix flour, water, yeast.", "Buy some.")


def test_split_shared_prompt_joins_a_reply_split_over_two_assistant_turns():
    chosen = [user("q"), assistant("part one"), assistant("part two")]
    rejected = [user("q"), assistant("other")]
    assert split_shared_prompt(chosen, rejected) == ([user("q")], "part one\n\npart two", "other")


def test_split_shared_prompt_of_identical_conversations_keeps_the_last_reply():
    conversation = [user("q"), assistant("a")]
    assert split_shared_prompt(conversation, list(conversation)) == ([user("q")], "a", "a")


@pytest.mark.parametrize("chosen, rejected, problem", [
    ([user("q1"), assistant("a"), user("q2"), assistant("x")],
     [user("q1"), assistant("b"), user("q2"), assistant("y")], "differ before the final reply"),
    ([user("q"), assistant("a")], [user("other q"), assistant("b")], "share no prompt turn"),
    ([user("q"), assistant("a"), user("more")], [user("q"), assistant("b")],
     "chosen does not end with an assistant"),
])
def test_split_shared_prompt_rejects_pairs_without_a_shared_prompt(chosen, rejected, problem):
    with pytest.raises(ValueError, match=problem):
        split_shared_prompt(chosen, rejected)


def test_hh_record_differing_early_is_malformed_with_its_line(tmp_path):
    good = {"chosen": hh("q", "a"), "rejected": hh("q", "b")}
    bad = {"chosen": hh("q1", "a", "q2", "x"), "rejected": hh("q1", "b", "q2", "y")}
    path = write_lines(tmp_path / "hh.jsonl", [good, bad])
    pairs, stats = load_preferences(path)
    assert len(pairs) == 1 and stats.skipped_malformed == 1
    assert stats.errors[0].startswith(f"{path}:2: chosen and rejected differ before the final reply")
    assert stats.errors[0].endswith("(hh format)")
    with pytest.raises(DataError, match=f"^{path}:2: chosen and rejected differ"):
        load_preferences(path, on_error="raise")


def test_identical_and_empty_pairs_are_dropped_and_counted(tmp_path):
    records = [{"prompt": "q", "chosen": "same ", "rejected": " same"},
               {"prompt": "q", "chosen": "", "rejected": "b"},
               {"prompt": "q", "chosen": [user("q"), assistant("a")],
                "rejected": [user("q"), assistant("  ")]},
               {"prompt": "q", "chosen": "a", "rejected": "b"}]
    pairs, stats = load_preferences(write_lines(tmp_path / "p.jsonl", records))
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "b")]
    assert (stats.records, stats.kept, stats.dropped_identical, stats.dropped_empty) == (4, 1, 1, 2)


def test_malformed_lines_are_reported_with_line_numbers(tmp_path):
    records = [{"prompt": "q", "chosen": "a", "rejected": "b"}, "not json", {"prompt": "q", "chosen": "a"},
               {"prompt": "q", "chosen": [user("q")], "rejected": "b"}, {"chosen": "a", "rejected": "b"}]
    path = write_lines(tmp_path / "p.jsonl", records)
    pairs, stats = load_preferences(path, format="pairs")
    assert len(pairs) == 1 and stats.skipped_malformed == 4
    assert stats.errors[0].startswith(f"{path}:2: not valid JSON")
    assert stats.errors[1] == f"{path}:3: missing field 'rejected' (pairs format)"
    assert stats.errors[2] == f"{path}:4: field 'chosen' must end with an assistant message (pairs format)"
    assert stats.errors[3].startswith(f"{path}:5: no 'prompt' field")
    with pytest.raises(DataError, match=f"^{path}:2: not valid JSON"):
        load_preferences(path, format="pairs", on_error="raise")


def test_auto_detection_picks_pairs_or_hh(tmp_path):
    hh_path = write_lines(tmp_path / "hh.jsonl", [{"chosen": hh("q", "a"), "rejected": hh("q", "b")}])
    pairs_path = write_lines(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    expected = [PreferencePair([user("q")], "a", "b")]
    assert load_preferences(hh_path)[0] == load_preferences(pairs_path)[0] == expected
    odd_path = write_lines(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=f"{odd_path}:1: no preference format fits"):
        load_preferences(odd_path)


def test_missing_file_and_bad_options(tmp_path):
    path = str(tmp_path / "missing.jsonl.gz")
    with pytest.raises(DataError, match=f"{path}: no such file"):
        load_preferences(path)
    with pytest.raises(ConfigError, match="format='dpo' is not one of auto, pairs, hh"):
        load_preferences(path, format="dpo")


def test_save_to_disk_folder_loads(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"prompt": ["q1", "q2"], "chosen": ["a1", "a2"], "rejected": ["b1", "b2"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "prefs"))
    pairs, stats = load_preferences(str(tmp_path / "prefs"))
    assert [(p.prompt[0]["content"], p.chosen, p.rejected) for p in pairs] == [("q1", "a1", "b1"),
                                                                                ("q2", "a2", "b2")]
    assert stats.records == 2
