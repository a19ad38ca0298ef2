"""SFT conversation loading: every format, auto-detection, error reporting and source kinds."""

import gzip
import json

import pytest

from llm.data.conversations import detect_format, load_conversations, parse_hh_transcript
from llm.data.records import iter_records
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


HH_TWO_TURNS = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant: Fine, thanks."


def test_messages_format_strips_content(tmp_path):
    record = {"messages": [{"role": "system", "content": " Be brief. "},
                           {"role": "user", "content": "2+2?\n"},
                           {"role": "assistant", "content": " 4 "}]}
    conversations, stats = load_conversations(write_lines(tmp_path / "m.jsonl", [record]), format="messages")
    assert conversations == [[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "2+2?"},
                              {"role": "assistant", "content": "4"}]]
    assert (stats.records, stats.kept, stats.skipped_malformed) == (1, 1, 0)


def test_alpaca_joins_instruction_and_input(tmp_path):
    records = [{"instruction": "Translate to French.", "input": "cat", "output": "chat"},
               {"instruction": "Say hi.", "input": "", "output": "hi"},
               {"instruction": "Say bye.", "output": "bye"}]
    conversations, stats = load_conversations(write_lines(tmp_path / "a.jsonl", records), format="alpaca")
    assert [c[0]["content"] for c in conversations] == ["Translate to French.\n\ncat", "Say hi.", "Say bye."]
    assert [c[1] for c in conversations][0] == {"role": "assistant", "content": "chat"}
    assert stats.kept == 3


def test_sharegpt_maps_speakers_to_roles(tmp_path):
    record = {"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "q"},
                                {"from": "gpt", "value": "a"}]}
    conversations, _ = load_conversations(write_lines(tmp_path / "s.jsonl", [record]), format="sharegpt")
    assert [m["role"] for m in conversations[0]] == ["system", "user", "assistant"]


def test_hh_takes_the_chosen_transcript(tmp_path):
    record = {"chosen": HH_TWO_TURNS, "rejected": HH_TWO_TURNS.replace("Fine, thanks.", "Go away.")}
    conversations, _ = load_conversations(write_lines(tmp_path / "h.jsonl", [record]), format="hh")
    assert conversations[0][-1] == {"role": "assistant", "content": "Fine, thanks."}
    assert len(conversations[0]) == 4


def test_alpaca_seed_gives_one_conversation_per_instance(tmp_path):
    record = {"instruction": "Classify the sentiment.",
              "instances": [{"input": "I love it", "output": "positive"},
                            {"input": "I hate it", "output": "negative"},
                            {"input": "meh", "output": "  "}]}
    conversations, stats = load_conversations(write_lines(tmp_path / "seed.jsonl", [record]))
    assert [c[0]["content"] for c in conversations] == ["Classify the sentiment.\n\nI love it",
                                                        "Classify the sentiment.\n\nI hate it"]
    assert (stats.records, stats.kept, stats.skipped_empty) == (1, 2, 1)


@pytest.mark.parametrize("record, expected", [
    ({"messages": []}, "messages"),
    ({"conversations": []}, "sharegpt"),
    ({"instruction": "x", "output": "y"}, "alpaca"),
    ({"instruction": "x", "input": "y"}, "alpaca"),  # missing output: detected, then reported malformed
    ({"instruction": "x", "instances": []}, "alpaca_seed"),
    ({"chosen": "x", "rejected": "y"}, "hh"),
])
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_detect_format_rejects_unknown_keys():
    with pytest.raises(DataError, match="no conversation format fits keys \\['text'\\]"):
        detect_format({"text": "hello"})


def test_auto_detects_from_first_valid_record(tmp_path):
    path = write_lines(tmp_path / "auto.jsonl", ["{not json", {"conversations": [
        {"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]}])
    conversations, stats = load_conversations(path)
    assert conversations == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert stats.skipped_malformed == 1


def test_auto_with_unknown_format_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "odd.jsonl", [{"text": "plain"}])
    with pytest.raises(DataError, match=f"{path}:1: no conversation format fits"):
        load_conversations(path)


def test_malformed_lines_are_counted_with_line_numbers(tmp_path):
    good = {"instruction": "q", "output": "a"}
    path = write_lines(tmp_path / "bad.jsonl", [good, "", "{oops", {"instruction": "q"}, "[1, 2]", good])
    conversations, stats = load_conversations(path, format="alpaca")
    assert len(conversations) == 2
    assert (stats.records, stats.kept, stats.skipped_malformed) == (5, 2, 3)  # blank line 2 is not a record
    assert stats.errors[0].startswith(f"{path}:3: not valid JSON")
    assert stats.errors[1] == f"{path}:4: missing field 'output' (alpaca format)"
    assert stats.errors[2] == f"{path}:5: expected a JSON object, got list"


def test_malformed_line_raises_in_raise_mode(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"instruction": "q", "output": "a"}, {"instruction": "q"}])
    with pytest.raises(DataError, match=f"^{path}:2: missing field 'output' \\(alpaca format\\)$"):
        load_conversations(path, on_error="raise")


def test_error_log_keeps_only_the_first_ten(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["{"] * 15)
    _, stats = load_conversations(path, format="alpaca")
    assert stats.skipped_malformed == 15 and len(stats.errors) == 10


def test_messages_format_rejects_sharegpt_keys_and_bad_roles(tmp_path):
    records = [{"messages": [{"from": "human", "value": "q"}]},
               {"messages": [{"role": "bot", "content": "q"}]},
               {"messages": [{"role": "user", "content": None}]}]
    _, stats = load_conversations(write_lines(tmp_path / "m.jsonl", records), format="messages")
    assert stats.skipped_malformed == 3
    assert "'from'/'value' keys" in stats.errors[0]
    assert "role 'bot' is not one of system, user, assistant" in stats.errors[1]
    assert "content must be a string" in stats.errors[2]


def test_conversations_without_a_reply_are_skipped_and_tails_trimmed(tmp_path):
    records = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
               {"messages": [{"role": "user", "content": "q"}]},
               {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                             {"role": "user", "content": "more?"}, {"role": "assistant", "content": ""}]}]
    conversations, stats = load_conversations(write_lines(tmp_path / "m.jsonl", records))
    assert conversations == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert (stats.kept, stats.skipped_empty, stats.skipped_malformed) == (1, 2, 0)


def test_gzip_jsonl_and_json_list(tmp_path):
    record = {"instruction": "q", "output": "a"}
    gz_conversations, _ = load_conversations(write_lines(tmp_path / "d.jsonl.gz", [record, record]))
    assert len(gz_conversations) == 2
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps([record, {"instruction": "q"}]))
    conversations, stats = load_conversations(str(json_path))
    assert len(conversations) == 1
    assert stats.errors == [f"{json_path}[record 1]: missing field 'output' (alpaca format)"]


def test_json_file_holding_json_lines_reads_as_jsonl(tmp_path):
    path = write_lines(tmp_path / "lines.json", [{"instruction": "q", "output": "a"}, "{broken"])
    conversations, stats = load_conversations(path)
    assert len(conversations) == 1
    assert stats.errors[0].startswith(f"{path}:2: not valid JSON")


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(DataError, match=f"{path}:1: cannot read: Not a gzipped file"):
        load_conversations(str(path))


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataError, match=f"{path}: no such file"):
        load_conversations(path)


def test_bad_options_raise_config_error(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}])
    with pytest.raises(ConfigError, match="format='csv' is not one of auto, messages"):
        load_conversations(path, format="csv")
    with pytest.raises(ConfigError, match="on_error='ignore' is not one of skip, raise"):
        load_conversations(path, on_error="ignore")


def test_parse_hh_transcript_multi_turn():
    assert parse_hh_transcript(HH_TWO_TURNS + "  \n") == [
        {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Fine, thanks."}]


@pytest.mark.parametrize("text, problem", [
    ("just some text", "no '\\\\n\\\\nHuman:'"),
    ("\n\nAssistant: hi\n\nHuman: yo", "does not start with"),
    ("preamble\n\nHuman: hi\n\nAssistant: yo", "does not start with"),
])
def test_parse_hh_transcript_rejects_bad_transcripts(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_hh_transcript(text)


def test_bad_hh_transcript_is_malformed_with_its_line(tmp_path):
    path = write_lines(tmp_path / "h.jsonl", [{"chosen": HH_TWO_TURNS}, {"chosen": "no markers"}])
    with pytest.raises(DataError, match=f"{path}:2: field 'chosen': no .* markers \\(hh format\\)"):
        load_conversations(path, on_error="raise")


def test_save_to_disk_folder_loads(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"instruction": ["q1", "q2"], "input": [None, "ctx"], "output": ["a1", "a2"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "plain"))
    conversations, _ = load_conversations(str(tmp_path / "plain"))
    assert [c[0]["content"] for c in conversations] == ["q1", "q2\n\nctx"]
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_conversations(str(tmp_path / "dict"), split="test")[0]) == 2
    with pytest.raises(DataError, match="no split 'train'; the saved dataset has test"):
        load_conversations(str(tmp_path / "dict"))


def test_dataset_name_that_fails_to_load_is_one_data_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def unreachable(name, split):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="^someone/chat-data: cannot load dataset \\(split 'train'\\): "
                                        "Couldn't reach 'someone/chat-data' on the Hub; for a local"):
        load_conversations("someone/chat-data")


def test_iter_records_reports_where_each_record_is(tmp_path):
    path = write_lines(tmp_path / "r.jsonl", [{"a": 1}, "", {"b": 2}])
    assert list(iter_records(path)) == [(f"{path}:1", {"a": 1}), (f"{path}:3", {"b": 2})]
