import pytest

from llm.tokenizer import (
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    Tokenizer,
    bytes_per_token,
    render_conversation,
    render_prompt,
    render_turns,
    train,
)


def test_round_trip_and_special_tokens(tokenizer, tmp_path):
    text = "The quick brown fox: über naïve café, 3.14 — done\n\tindent"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.special_ids) == len(SPECIAL_TOKENS)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    again = Tokenizer.load(path)
    assert again.encode(text) == tokenizer.encode(text)
    assert again.vocab_size == tokenizer.vocab_size
    assert (again.bos_id, again.eos_id, again.end_id, again.pad_id) == (tokenizer.bos_id, tokenizer.eos_id,
                                                                        tokenizer.end_id, tokenizer.pad_id)


def test_compresses_english(tokenizer, corpus_file):
    # byte-level BPE starts at 1 byte per token; even 512 merges should about double that
    assert bytes_per_token(tokenizer, [corpus_file.read_text()[:20000]]) > 1.8


def test_token_byte_lengths_sum_to_text_bytes(tokenizer):
    text = "Return the number of items in a container."
    lengths = tokenizer.token_byte_lengths()
    assert sum(lengths[i] for i in tokenizer.encode(text)) == len(text.encode())
    assert all(lengths[i] == 0 for i in tokenizer.special_ids)


def test_chat_template_masks_assistant_and_end(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    ids, mask = render_conversation(tokenizer, messages)
    assert ids[0] == tokenizer.bos_id and len(ids) == len(mask)
    learned = [i for i, m in zip(ids, mask) if m]
    expected = tokenizer.encode("Hello there") + [tokenizer.end_id] + tokenizer.encode("Goodbye") + [tokenizer.end_id]
    assert learned == expected
    assert ids.count(tokenizer.end_id) == 5  # every turn closes with <|end|>


def test_prompt_ends_with_assistant_header(tokenizer):
    ids = render_prompt(tokenizer, [{"role": "user", "content": "Hi"}])
    assert ids[-1] == tokenizer.role_ids["assistant"]
    assert ids[:-1] == render_conversation(tokenizer, [{"role": "user", "content": "Hi"}])[0]


def test_open_last_turn_has_no_end(tokenizer):
    turns = render_turns(tokenizer, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], last_complete=False)
    assert turns[0][0][-1] == tokenizer.end_id and turns[1][0][-1] != tokenizer.end_id


def test_min_vocab_size_is_the_bytes_and_special_tokens():
    # the trainer grows any smaller request to exactly this size, so asking for less is refused, not rounded up
    assert train(["a tiny text"], MIN_VOCAB_SIZE).vocab_size == MIN_VOCAB_SIZE == 256 + len(SPECIAL_TOKENS)
    with pytest.raises(ValueError, match=f"vocab_size must be at least {MIN_VOCAB_SIZE} .*; got 5$"):
        train(["a tiny text"], 5)
