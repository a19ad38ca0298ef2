"""Corpus -> documents -> train/validation split -> tokenizer -> flat token files, cached.

Token files are raw arrays (uint16 when the vocabulary fits, else uint32) read through np.memmap, so
a corpus larger than memory trains as well. Both the tokenizer and the token files are cached under
`data.cache_dir`, keyed by a digest of the documents and of the settings that shape the output, so a
second run on the same corpus skips the work.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm.config import DataConfig, TokenizerConfig
from llm.data.records import split_train_val
from llm.errors import DataError
from llm.run_files import BadLine, jsonl_lines
from llm.tokenizer import Tokenizer, train

SPLIT_SEED = 1234  # fixed so every run on a corpus sees the same validation documents


@dataclass(frozen=True)
class TokenFile:
    path: Path
    n_tokens: int
    n_bytes: int  # UTF-8 bytes of the text these tokens encode
    dtype: str

    def load(self) -> np.ndarray:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))


@dataclass(frozen=True)
class PreparedCorpus:
    tokenizer: Tokenizer
    train: TokenFile
    val: TokenFile
    digest: str
    n_documents: tuple[int, int]  # train, validation
    prepare_s: float = 0.0


# --- reading documents ---------------------------------------------------------------------------


def read_documents(cfg: DataConfig) -> list[str]:
    """The corpus as a list of documents, from any of the supported sources."""
    if cfg.path == "builtin":
        from llm.data.builtin_corpus import builtin_documents

        return list(builtin_documents())
    path = Path(cfg.path)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return read_hf_dataset(str(path), cfg, from_disk=True)
        return read_text_folder(path, cfg.chunk_chars)
    if path.is_file():
        if path.name.endswith((".jsonl", ".jsonl.gz")):
            return read_jsonl_texts(path, cfg.text_field)
        return chunk_text(read_text_file(path), cfg.chunk_chars)
    if looks_like_path(cfg.path):
        raise DataError(f"{cfg.path}: data file not found (key 'data.path')")
    return read_hf_dataset(cfg.path, cfg, from_disk=False)


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith((".txt", ".jsonl", ".gz", ".json")) or os.sep + os.sep in name


def read_text_file(path: Path) -> str:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_text_folder(folder: Path, chunk_chars: int) -> list[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".txt", ".md"))
    if not files:
        raise DataError(f"{folder}: no .txt or .md files in this folder")
    documents = []
    for path in files:
        documents.extend(chunk_text(read_text_file(path), chunk_chars))
    return documents


def read_jsonl_texts(path: Path, field: str) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    texts = []
    with opener(path, "rb") as handle:
        for where, record in jsonl_lines(path, handle):
            if isinstance(record, BadLine):
                raise DataError(f"{where}: {record.problem}")
            text = record.get(field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{where}: no string field '{field}' (key 'data.text_field')")
            if text.strip():
                texts.append(text)
    if not texts:
        raise DataError(f"{path}: no documents with text in field '{field}'")
    return texts


def read_hf_dataset(name: str, cfg: DataConfig, from_disk: bool) -> list[str]:
    import datasets

    datasets.disable_progress_bar()
    try:
        if from_disk:
            dataset = datasets.load_from_disk(name)
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[cfg.split]
        else:
            dataset = datasets.load_dataset(name, split=cfg.split)
    except Exception as exc:  # datasets raises many types; the user needs the source and the reason
        raise DataError(f"{name}: cannot load as a datasets dataset ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    if cfg.text_field not in dataset.column_names:
        raise DataError(f"{name}: no column '{cfg.text_field}' (key 'data.text_field'; columns: {dataset.column_names})")
    return [text for text in dataset[cfg.text_field] if isinstance(text, str) and text.strip()]


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Cut one long text into documents of about `chunk_chars`, at line ends, so it can be split."""
    if len(text) <= chunk_chars:
        return [text] if text.strip() else []
    chunks, start = [], 0
    while start < len(text):
        end = text.find("\n", start + chunk_chars)
        end = len(text) if end == -1 else end + 1
        if text[start:end].strip():
            chunks.append(text[start:end])
        start = end
    return chunks


def split_documents(documents: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    if not 0 < val_fraction < 1:
        raise DataError(f"key 'data.val_fraction' must be between 0 and 1, got {val_fraction}")
    if len(documents) < 2:
        raise DataError("the corpus has fewer than 2 documents: nothing to hold out for validation")
    return split_train_val(documents, val_fraction, SPLIT_SEED)


# --- tokenizer and token files -------------------------------------------------------------------


def documents_digest(documents: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for doc in documents:
        h.update(len(doc).to_bytes(8, "little"))
        h.update(doc.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def prepare_corpus(data: DataConfig, tok_cfg: TokenizerConfig) -> PreparedCorpus:
    """Read, split, get a tokenizer (trained on the training split) and token files, from cache when possible."""
    import time

    started = time.perf_counter()
    documents = read_documents(data)
    train_docs, val_docs = split_documents(documents, data.val_fraction)
    digest = documents_digest(documents) + f"-v{data.val_fraction}"
    cache = Path(data.cache_dir)
    tokenizer = cached_tokenizer(tok_cfg, train_docs, digest, cache)
    token_key = hashlib.blake2b((digest + tokenizer.to_json()).encode(), digest_size=12).hexdigest()
    folder = cache / "tokens" / token_key
    if not (folder / "meta.json").is_file():
        write_token_files(folder, tokenizer, train_docs, val_docs, data.num_proc)
    meta = json.loads((folder / "meta.json").read_text())
    train_file = TokenFile(folder / "train.bin", **meta["train"])
    val_file = TokenFile(folder / "val.bin", **meta["val"])
    return PreparedCorpus(tokenizer, train_file, val_file, token_key, (len(train_docs), len(val_docs)), time.perf_counter() - started)


def cached_tokenizer(tok_cfg: TokenizerConfig, train_docs: list[str], digest: str, cache: Path) -> Tokenizer:
    if tok_cfg.path:
        return Tokenizer.load(tok_cfg.path)
    path = cache / "tokenizers" / f"{digest}-{tok_cfg.vocab_size}-{tok_cfg.min_frequency}.json"
    if path.is_file():
        return Tokenizer.load(path)
    tokenizer = train(train_docs, tok_cfg.vocab_size, tok_cfg.min_frequency)
    tokenizer.save(path)
    return tokenizer


def write_token_files(folder: Path, tokenizer: Tokenizer, train_docs: list[str], val_docs: list[str], num_proc: int) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if tokenizer.vocab_size <= 2**16 else "uint32"
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        meta = {}
        for split, docs in (("train", train_docs), ("val", val_docs)):
            ids, n_bytes = tokenize_documents(tokenizer, docs, num_proc)
            ids.astype(dtype).tofile(staging / f"{split}.bin")
            meta[split] = {"n_tokens": int(ids.size), "n_bytes": int(n_bytes), "dtype": dtype}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        os.replace(staging, folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        # else another process prepared the same corpus first (rename onto its folder fails); same files
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def tokenize_documents(tokenizer: Tokenizer, docs: list[str], num_proc: int) -> tuple[np.ndarray, int]:
    """Each document framed as <|bos|> ids <|eos|>, all concatenated; batched through datasets.map."""
    import datasets

    datasets.disable_progress_bar()
    dataset = datasets.Dataset.from_dict({"text": docs})
    # one process already uses every core (tokenizers encodes a batch on all of them); worker processes
    # pay off only once the corpus is large enough to amortise their start
    procs = num_proc or ((os.cpu_count() or 1) if len(docs) >= 20_000 else 1)
    backend, bos, eos = tokenizer.backend, tokenizer.bos_id, tokenizer.eos_id

    def encode(batch):
        encoded = backend.encode_batch(batch["text"], add_special_tokens=False)
        return {
            "ids": [[bos, *e.ids, eos] for e in encoded],
            "n_bytes": [len(t.encode("utf-8")) for t in batch["text"]],
        }

    mapped = dataset.map(encode, batched=True, batch_size=1000, num_proc=procs if procs > 1 else None, remove_columns=["text"])
    ids = mapped.with_format("numpy")["ids"]
    out = np.concatenate(list(ids)).astype(np.uint32) if len(ids) else np.zeros(0, dtype=np.uint32)
    return out, int(np.sum(mapped["n_bytes"]))
