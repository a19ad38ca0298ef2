"""Streamed text: a character whose bytes span several tokens comes out whole, once it is complete."""

import io

from llm.stream import TextDecoder, TokenPrinter


def test_a_character_split_across_tokens_is_held_back_until_complete(tokenizer):
    text = "a 漢字 b"  # not in the English corpus: each CJK character is three byte tokens
    ids = tokenizer.encode(text)
    assert len(ids) > len(text)  # the characters really are split across tokens
    decoder = TextDecoder(tokenizer)
    pieces = [decoder.add(token) for token in [tokenizer.end_id, *ids]]  # a special token adds no text
    assert "".join(pieces) + decoder.finish() == text
    assert all("\ufffd" not in piece for piece in pieces)
    assert pieces.count("") >= 4  # two held-back bytes for each of the two characters, and the special token


def test_the_printer_writes_the_same_text_and_ends_the_line(tokenizer):
    out = io.StringIO()
    printer = TokenPrinter(tokenizer, out)
    for token in tokenizer.encode("héllo 漢"):
        printer.add(token)
    assert printer.finish() == "héllo 漢" and out.getvalue() == "héllo 漢\n"
