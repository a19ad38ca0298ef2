"""Pre-training: next-token prediction on a corpus, evaluated in loss, perplexity and bits per byte."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from llm.chat import seeded, text_sampling
from llm.config import PretrainConfig
from llm.data.corpus import PreparedCorpus, prepare_corpus
from llm.data.windows import RandomWindows, eval_windows, window_batch
from llm.distributed import main_process_first
from llm.eval.copying import PASSAGE_TOKENS, copy_losses, passages
from llm.generate import generate
from llm.losses import token_nll
from llm.model import GPT, model_size
from llm.stages.launch import Built
from llm.tokenizer import Tokenizer
from llm.train.loop import LossOutput, Stage, to_device
from llm.train.runtime import Runtime


class PretrainStage(Stage):
    name = "pretrain"

    def __init__(self, cfg: PretrainConfig, corpus: PreparedCorpus, runtime: Runtime):
        self.cfg = cfg
        self.tokenizer = corpus.tokenizer
        self.device = runtime.device
        self.model = GPT(cfg.model)
        train_tokens, val_tokens = corpus.train.load(), corpus.val.load()
        tc = cfg.train
        self.source = RandomWindows(train_tokens, tc.batch_size, cfg.model.block_size, tc.seed, runtime.dist.rank,
                                    runtime.dist.world_size, cfg.data.repeat_fraction)
        self.val_batches = eval_windows(val_tokens, tc.batch_size, cfg.model.block_size, tc.eval_batches)
        self.train_sample = fixed_train_windows(train_tokens, tc.batch_size, cfg.model.block_size, tc.eval_batches)
        self.token_bytes = torch.tensor(self.tokenizer.token_byte_lengths(), dtype=torch.float64)
        self.copy_passages = passages(val_tokens, length=min(PASSAGE_TOKENS, cfg.model.block_size // 2))

    def loss(self, model, batch) -> LossOutput:
        return lm_loss(model, batch)

    def evaluate(self, model) -> dict[str, float]:
        val_nats, val_tokens, val_bytes = self.summed_loss(model, self.val_batches)
        train_nats, train_tokens, _ = self.summed_loss(model, self.train_sample)
        val_loss = val_nats / val_tokens
        first, second = copy_losses(model, self.copy_passages)
        return {
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 50.0)),
            "val_bpb": val_nats / (math.log(2) * val_bytes),
            "train_loss": train_nats / train_tokens,
            "copy_gain": first - second,  # nats per token: near 0 until the model can copy what it has seen
        }

    def summed_loss(self, model, batches) -> tuple[float, int, float]:
        nats, tokens, n_bytes = 0.0, 0, 0.0
        for batch in batches:
            batch = to_device(batch, self.device)
            targets = batch["targets"]
            batch_nats, count = token_nll(model(batch["input_ids"]), targets)
            nats, tokens = nats + batch_nats.item(), tokens + count
            n_bytes += float(self.token_bytes[targets.flatten().cpu()].sum())
        return nats, tokens, n_bytes

    def samples(self, model) -> list[str]:
        return sample_texts(model, self.tokenizer, self.cfg)

    def flops_per_token(self) -> float:
        return model_size(self.cfg.model).flops_per_token


def lm_loss(model, batch) -> LossOutput:
    """Next-token cross-entropy summed over every target token."""
    loss, count = token_nll(model(batch["input_ids"]), batch["targets"])
    return LossOutput(loss=loss, count=count, tokens=count)


def fixed_train_windows(tokens: np.ndarray, batch_size: int, block_size: int, max_batches: int) -> list[dict]:
    """A fixed sample of training windows, so train and validation loss are measured alike (overfitting shows as a gap)."""
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(tokens) - block_size - 1, size=batch_size * max_batches)
    return [window_batch(tokens, starts[i : i + batch_size], block_size) for i in range(0, len(starts), batch_size)]


def sample_texts(model: GPT, tokenizer: Tokenizer, cfg) -> list[str]:
    """Continuations of the configured prompts, with a private generator so training's RNG is untouched."""
    s = cfg.sampling
    params = text_sampling(tokenizer, s.max_new_tokens, s.temperature, s.top_k, s.top_p)
    generator = seeded(model, s.seed)
    prompts = [[tokenizer.bos_id, *tokenizer.encode(p)] for p in s.prompts]
    out = generate(model, prompts, params, tokenizer.pad_id, generator=generator)
    return [p + tokenizer.decode(t) for p, t in zip(s.prompts, out.tokens)]


def build(cfg: PretrainConfig, runtime: Runtime) -> Built:
    with main_process_first(runtime.dist):
        corpus = prepare_corpus(cfg.data, cfg.tokenizer)
    if cfg.model.vocab_size == 0:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=corpus.tokenizer.vocab_size))
    stage = PretrainStage(cfg, corpus, runtime)
    info = corpus_info(corpus)
    return Built(stage, cfg, corpus.tokenizer.to_json(), info, [
        f"[pretrain] corpus: {info['tokens']['train']:,} train / {info['tokens']['val']:,} val tokens, vocab {info['vocab_size']}, "
        f"{info['val_bytes_per_token']:.2f} bytes/token on validation ({corpus.prepare_s:.1f}s)",
        f"[pretrain] model: {stage.model.num_params():,} parameters on {runtime.device} ({runtime.precision.dtype})"])


def corpus_info(corpus: PreparedCorpus) -> dict:
    val = corpus.val
    return {
        "documents": {"train": corpus.n_documents[0], "val": corpus.n_documents[1]},
        "tokens": {"train": corpus.train.n_tokens, "val": val.n_tokens},
        "bytes": {"train": corpus.train.n_bytes, "val": val.n_bytes},
        "vocab_size": corpus.tokenizer.vocab_size,
        # document framing tokens carry no bytes, so this is text bytes over all tokens
        "val_bytes_per_token": val.n_bytes / max(val.n_tokens, 1),
        "prepare_s": corpus.prepare_s,
    }
