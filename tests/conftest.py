"""Shared fixtures: a small English corpus, a tokenizer trained on it, and a tiny pre-training config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """About 300 KB of the built-in corpus as one text file."""
    from llm.data.builtin_corpus import builtin_documents

    text, size = [], 0
    for doc in builtin_documents():
        text.append(doc)
        size += len(doc)
        if size > 300_000:
            break
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(text))
    return path


@pytest.fixture(scope="session")
def tokenizer(corpus_file):
    from llm.tokenizer import train

    return train([corpus_file.read_text()], vocab_size=512)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny_overrides(corpus_file: Path, cache_dir: Path, out_dir: Path, name: str = "tiny") -> list[str]:
    """A model and run small enough that a step takes milliseconds on a CPU."""
    return [
        f"name={name}",
        f"out_dir={out_dir}",
        f"data.path={corpus_file}",
        f"data.cache_dir={cache_dir}",
        "data.chunk_chars=4000",
        "tokenizer.vocab_size=512",
        "model.block_size=32",
        "model.n_layer=2",
        "model.n_head=2",
        "model.n_embd=32",
        "optim.lr=3e-3",
        "optim.warmup_steps=5",
        "train.batch_size=8",
        "train.max_steps=40",
        "train.eval_every=20",
        "train.eval_batches=2",
        "train.log_every=1",
        "train.progress=false",
        "checkpoint.save_every=20",
        "sampling.max_new_tokens=8",
    ]


@pytest.fixture
def tiny_pretrain_config(corpus_file, cache_dir, tmp_path):
    from llm.config import PretrainConfig, load_config

    def make(*extra: str, name: str = "tiny"):
        return load_config(PretrainConfig, None, tiny_overrides(corpus_file, cache_dir, tmp_path / "runs", name) + list(extra))

    return make
