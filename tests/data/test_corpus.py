import gzip
import json

import numpy as np
import pytest

from llm.config import DataConfig, TokenizerConfig
from llm.data.corpus import chunk_text, prepare_corpus, read_documents, split_documents
from llm.errors import DataError


def test_text_file_is_chunked_and_split(corpus_file):
    docs = read_documents(DataConfig(path=str(corpus_file), chunk_chars=5000))
    assert len(docs) > 20 and "".join(docs) == corpus_file.read_text()
    train, val = split_documents(docs, 0.1)
    assert len(val) == round(len(docs) * 0.1) and len(train) + len(val) == len(docs)
    assert not set(train) & set(val) or len(set(docs)) < len(docs)


def test_folder_jsonl_and_gz_sources(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("second file")
    (folder / "a.txt").write_text("first file")
    assert read_documents(DataConfig(path=str(folder))) == ["first file", "second file"]
    jsonl = tmp_path / "d.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.write(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert read_documents(DataConfig(path=str(jsonl), text_field="body")) == ["one", "two"]


def test_bad_sources_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="missing.txt: data file not found"):
        read_documents(DataConfig(path=str(tmp_path / "missing.txt")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_documents(DataConfig(path=str(bad)))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"content": "ok"}\n')
    with pytest.raises(DataError, match=r"wrong.jsonl:1: no string field 'text'"):
        read_documents(DataConfig(path=str(wrong)))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="bin.txt: not UTF-8"):
        read_documents(DataConfig(path=str(binary)))


def test_datasets_folder_source(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["alpha beta", "gamma"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_documents(DataConfig(path=str(tmp_path / "ds"))) == ["alpha beta", "gamma"]


def test_chunks_end_at_line_breaks():
    text = "".join(f"line {i}\n" for i in range(1000))
    chunks = chunk_text(text, 500)
    assert "".join(chunks) == text and all(c.endswith("\n") for c in chunks)


def test_prepared_corpus_is_cached_and_framed(corpus_file, tmp_path):
    data = DataConfig(path=str(corpus_file), cache_dir=str(tmp_path / "cache"), chunk_chars=5000)
    first = prepare_corpus(data, TokenizerConfig(vocab_size=400))
    tokens = first.train.load()
    assert first.train.dtype == "uint16" and tokens.max() < first.tokenizer.vocab_size
    tok = first.tokenizer
    assert tokens[0] == tok.bos_id and (tokens == tok.eos_id).sum() == (tokens == tok.bos_id).sum() == first.n_documents[0]
    bins = sorted((tmp_path / "cache" / "tokens").rglob("*.bin"))
    stamps = [p.stat().st_mtime_ns for p in bins]
    second = prepare_corpus(data, TokenizerConfig(vocab_size=400))
    assert second.digest == first.digest and [p.stat().st_mtime_ns for p in bins] == stamps
    np.testing.assert_array_equal(second.val.load(), first.val.load())
    text_bytes = sum(len(d.encode()) for d in read_documents(data))
    assert first.train.n_bytes + first.val.n_bytes == text_bytes
