"""The built-in corpus: deterministic, big enough to pre-train on, prose rather than code."""

import os
import re
import subprocess
import sys

import pytest

from llm.data import builtin_corpus
from llm.data.builtin_corpus import builtin_documents, builtin_fingerprint, builtin_sentences

# CPython 3.11 gives ~3.0 MB (topics 0.39, stdlib 2.6, builtins 0.05). 2 MB leaves room for
# docstrings that other versions drop, and still fails if a filter or the file walk loses the
# stdlib: the topics and builtins alone are under 0.5 MB.
MIN_CORPUS_BYTES = 2_000_000
MIN_DOCUMENTS = 300


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return builtin_documents()


def test_corpus_is_several_megabytes_of_many_documents(documents):
    total_bytes = sum(len(document.encode("utf-8")) for document in documents)
    assert total_bytes > MIN_CORPUS_BYTES
    assert len(documents) > MIN_DOCUMENTS


def test_corpus_draws_on_topics_stdlib_and_builtins(documents):
    text = "\n".join(documents)
    assert "The \"for\" statement is used to iterate over the elements of a sequence" in text
    assert "textwrap:\nText wrapping and filling." in [document[:36] for document in documents]
    assert "len:\nReturn the number of items in a container." in text


@pytest.mark.slow
def test_another_process_with_another_hash_seed_builds_the_same_corpus_without_side_effects():
    # A different PYTHONHASHSEED reorders sets and str hashes: the fingerprint must not move.
    # Printing only the fingerprint also proves that `this` (which prints a poem on import)
    # and `antigravity` (which opens a browser) were parsed, not imported.
    script = ("import sys; from llm.data.builtin_corpus import builtin_fingerprint as f; "
              "print(f(), 'antigravity' in sys.modules, 'this' in sys.modules)")
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=environment, check=True, timeout=120)
    assert result.stdout.split() == [builtin_fingerprint(), "False", "False"]


def test_fingerprint_is_short_hex_and_follows_the_text(documents):
    assert re.fullmatch(r"[0-9a-f]{16}", builtin_fingerprint())
    assert builtin_fingerprint() == builtin_fingerprint()
    assert builtin_documents() == documents


def test_callers_get_their_own_copy(documents):
    first = builtin_documents()
    first.clear()
    assert builtin_documents() == documents and documents


def test_documents_are_trimmed_ascii_mostly_and_unique(documents):
    for document in documents:
        assert document and document == document.strip()
        non_ascii = sum(not character.isascii() for character in document)
        assert non_ascii <= 0.01 * len(document), document[:200]
    assert len(set(documents)) == len(documents)


def test_no_document_holds_doctest_sessions(documents):
    for document in documents:
        prompts = [line for line in document.splitlines() if line.lstrip().startswith(">>>")]
        assert not prompts, prompts[:3]


def test_test_suites_and_codec_tables_are_not_read():
    files = builtin_corpus._stdlib_files(builtin_corpus.sysconfig.get_paths()["stdlib"])
    assert "textwrap.py" in files and os.path.join("json", "decoder.py") in files
    for path in files:
        folders = set(path.split(os.sep)[:-1])
        assert not folders & {"test", "tests", "idle_test", "site-packages", "encodings"}, path


def test_cleaning_keeps_prose_and_drops_doctests_licenses_and_repeats():
    docstring = ("Wrap a single paragraph of text, returning a list\n"
                 "of wrapped lines of at most 'width' characters.\n\n"
                 ">>> wrap('a b c', 3)\n['a b', 'c']\n\n"
                 "Copyright (c) 2001 Python Software Foundation; all rights reserved.\n\n"
                 "Tabs in the text are expanded and all other\nwhitespace is normalised.")
    seen: set[str] = set()
    cleaned = builtin_corpus._clean_piece(docstring, seen, min_words=5)
    assert cleaned == ("Wrap a single paragraph of text, returning a list of wrapped lines of at "
                       "most 'width' characters.\n\n"
                       "Tabs in the text are expanded and all other whitespace is normalised.")
    assert builtin_corpus._clean_piece(docstring, seen, min_words=5) == ""  # a repeat
    assert builtin_corpus._clean_piece("Return self.", set(), min_words=5) == ""


def test_indented_lists_keep_their_lines_and_bullets_reflow():
    listing = "Arguments:\n\n    name -- the file name\n    mode -- 'r' or 'w'"
    bullet = "* If the target list is a single target,\n  the object is assigned to it."
    assert builtin_corpus._clean_piece(listing, set(), min_words=5) == (
        "Arguments:\n\nname -- the file name\nmode -- 'r' or 'w'")
    assert builtin_corpus._clean_piece(bullet, set(), min_words=5) == (
        "* If the target list is a single target, the object is assigned to it.")


def test_sentences_are_plain_ascii_prose_within_the_word_bounds():
    sentences = builtin_sentences(min_words=5, max_words=9)
    assert len(sentences) > 1000
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        assert sentence.isascii() and sentence[0].isupper() and sentence.endswith(".")
        assert 5 <= len(sentence.split()) <= 9
        assert sentence.count(".") == 1
        assert not any(symbol in sentence for symbol in ("(", ")", "=", "_", ">>>", '"', "`"))


def test_sentence_limit_takes_a_prefix_and_bad_bounds_are_refused():
    assert builtin_sentences(limit=50) == builtin_sentences()[:50]
    assert builtin_sentences(limit=0) == []
    with pytest.raises(ValueError, match="min_words"):
        builtin_sentences(min_words=6, max_words=3)
