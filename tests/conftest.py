"""Shared fixtures: a small English corpus, a tokenizer trained on it, and a tiny pre-training config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests import conftest_helpers
sys.path.insert(0, str(Path(__file__).parents[1]))  # and the benchmarks, which are not installed with llm

import pytest

from conftest_helpers import FLOAT32, reward_overrides, sft_overrides, tiny_overrides  # noqa: E402

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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


@pytest.fixture
def pretrain_args(corpus_file, cache_dir, tmp_path):
    """Command-line overrides of a tiny pre-training run under tmp_path/runs/<name>."""

    def make(*extra: str, name: str = "tiny") -> list[str]:
        return tiny_overrides(corpus_file, cache_dir, tmp_path / "runs", name) + [FLOAT32, *extra]

    return make


@pytest.fixture
def tiny_pretrain_config(pretrain_args):
    from llm.config import PretrainConfig, load_config

    def make(*extra: str, name: str = "tiny"):
        return load_config(PretrainConfig, None, pretrain_args(*extra, name=name))

    return make


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory, corpus_file, cache_dir) -> Path:
    """A tiny model pre-trained for a few seconds: the base every later-stage test starts from."""
    from llm.config import PretrainConfig, load_config
    from llm.stages.launch import run_stage

    out = tmp_path_factory.mktemp("pretrained")
    overrides = tiny_overrides(corpus_file, cache_dir, out, "base") + [
        "model.block_size=64", "model.n_embd=64", "train.max_steps=80", "train.eval_every=40", "checkpoint.save_every=40", FLOAT32,
    ]
    run_stage("pretrain", load_config(PretrainConfig, None, overrides))
    return out / "base"


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, pretrained_run) -> Path:
    from llm.config import SFTConfig, load_config
    from llm.stages.launch import run_stage

    out = tmp_path_factory.mktemp("sft")
    run_stage("sft", load_config(SFTConfig, None, sft_overrides(pretrained_run, out)))
    return out / "sft"


@pytest.fixture
def sft_args(pretrained_run, tmp_path):
    def make(*extra: str, name: str = "sft") -> list[str]:
        return sft_overrides(pretrained_run, tmp_path / "runs", name) + list(extra)

    return make


@pytest.fixture(scope="session")
def reward_run(tmp_path_factory, sft_run) -> Path:
    from llm.config import RewardConfig, load_config
    from llm.stages.launch import run_stage

    out = tmp_path_factory.mktemp("reward")
    run_stage("reward", load_config(RewardConfig, None, reward_overrides(sft_run, out)))
    return out / "reward"
