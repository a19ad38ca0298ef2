import gzip
import json

from llm.config import PreferenceDataConfig, SourceConfig
from llm.data.pairs import collate_pairs, load_pair_data, tokenize_pairs
from llm.data.preferences import PreferencePair


def pair(prompt="Say hi", chosen="hi", rejected="bye", **kw):
    return PreferencePair([{"role": "user", "content": prompt}], chosen, rejected, **kw)


def test_identical_empty_and_too_long_pairs_are_counted_and_dropped(tokenizer):
    pairs = [pair(), pair(chosen="same", rejected="same"), pair(rejected="  "), pair(prompt="word " * 200)]
    examples, stats = tokenize_pairs(tokenizer, pairs, max_len=64)
    assert len(examples) == 1
    assert (stats.dropped_identical, stats.dropped_empty, stats.dropped_too_long, stats.kept) == (1, 1, 1, 1)


def test_never_ending_reply_has_no_end_token_and_old_turns_are_dropped_first(tokenizer):
    long_history = [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "Say hi"}]
    pairs = [PreferencePair(long_history, "hi", "hi hi hi", "never_stops", True, False)]
    (example,), stats = tokenize_pairs(tokenizer, pairs, max_len=30)
    assert example.chosen[-1] == tokenizer.end_id and example.rejected[-1] != tokenizer.end_id
    assert stats.prompt_truncated == 1 and len(example) <= 30


def test_collate_puts_chosen_then_rejected_and_masks_replies(tokenizer):
    (a, b), _ = tokenize_pairs(tokenizer, [pair(), pair(prompt="Say something longer", chosen="yes indeed", rejected="no")], 64)
    batch = collate_pairs([a, b], tokenizer.pad_id)
    assert batch["input_ids"].shape[0] == 4
    assert batch["input_ids"][0, : len(a.prompt) + len(a.chosen)].tolist() == a.prompt + a.chosen
    assert batch["input_ids"][2, : len(a.prompt) + len(a.rejected)].tolist() == a.prompt + a.rejected
    reply_targets = batch["input_ids"][1, 1:][batch["reply_mask"][1]].tolist()
    assert reply_targets == b.chosen


def test_hh_file_splits_into_shared_prompt_and_replies(tokenizer, tmp_path):
    path = tmp_path / "hh.jsonl.gz"
    record = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a fact\n\nAssistant: Water boils at 100 C.",
              "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a fact\n\nAssistant: No."}
    with gzip.open(path, "wt") as f:
        for _ in range(10):
            f.write(json.dumps(record) + "\n")
    data = load_pair_data(PreferenceDataConfig(sources=[SourceConfig(path=str(path), format="hh")], val_fraction=0.2), tokenizer, 128)
    assert len(data.train) == 8 and len(data.val) == 2
    example = data.train[0]
    assert tokenizer.decode(example.chosen) == "Water boils at 100 C." and tokenizer.decode(example.rejected) == "No."
    assert "Tell me a fact" in tokenizer.decode(example.prompt)
