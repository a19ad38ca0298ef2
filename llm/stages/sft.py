"""Supervised fine-tuning: teach a pre-trained model to answer an instruction and stop.

The loss is next-token cross-entropy on assistant tokens only (the <|end|> closing each reply
included); batches are padded on the right and bucketed by length. Evaluation reports the
validation loss on assistant tokens and, on held-out built-in tasks, greedy exact-match accuracy and
the share of replies that end with <|end|>.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from llm.chat import generate_replies
from llm.config import ChatDataConfig, SFTConfig
from llm.data import sources
from llm.data.batching import EpochBatches, bucketed_order, fixed_batches, padding_fraction
from llm.data.builtin_tasks import builtin_tasks
from llm.data.chat import ChatExample, collate_chat, tokenize_conversations
from llm.data.tasks import Task
from llm.errors import ConfigError
from llm.eval.tasks import HeldOutSets, evaluate_tasks, item_verdicts
from llm.load import LoadedModel, load_for_finetuning
from llm.losses import IGNORE, token_nll
from llm.model import model_size
from llm.stages.launch import Built
from llm.tokenizer import Tokenizer
from llm.train.loop import LossOutput, Stage, to_device
from llm.train.runtime import Runtime


@dataclass
class ChatData:
    train: list[ChatExample]
    val: list[ChatExample]
    eval_tasks: list[Task]
    log: dict  # counts for the run folder: records, malformed, truncated, dropped


def load_chat_data(data: ChatDataConfig, tok: Tokenizer, max_len: int, n_eval_tasks: int) -> ChatData:
    """Training and validation conversations from every source, tokenized and cut to the context."""
    loaded = sources.conversations(data)
    train, train_stats = tokenize_conversations(tok, loaded.train, max_len)
    val, val_stats = tokenize_conversations(tok, loaded.val, max_len)
    log = {"sources": loaded.log, "train": dataclasses.asdict(train_stats), "val": dataclasses.asdict(val_stats)}
    if not train or not val:
        raise ConfigError(f"SFT data: {len(train)} training and {len(val)} validation conversations fit the context; need both")
    eval_tasks = builtin_tasks("val", n_eval_tasks, 0, data.builtin_kinds) if n_eval_tasks else []
    return ChatData(train, val, eval_tasks, log)


def reply_nll(model, batch: dict) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the tokens SFT learns (the replies and their end-of-turn), and their count."""
    targets = batch["targets"]
    learned = targets != IGNORE
    return token_nll(model(batch["input_ids"], logits_at=learned), targets[learned])


class SFTStage(Stage):
    name = "sft"

    def __init__(self, cfg: SFTConfig, base: LoadedModel, data: ChatData, runtime: Runtime):
        self.cfg, self.tok, self.data, self.device, self.dist = cfg, base.tokenizer, data, runtime.device, runtime.dist
        self.last_items: dict[str, dict[str, bool]] = {}
        # built once: the same held-out tasks at every evaluation
        self.held_out = HeldOutSets.build(self.tok, cfg.eval.unseen, cfg.data.builtin_kinds)
        self.model = base.model.train()
        collate = self.collate
        lengths = [len(e) for e in data.train]
        self.source = EpochBatches(data.train, lengths, cfg.train.batch_size, cfg.train.seed, collate,
                                   runtime.dist.rank, runtime.dist.world_size)
        self.val_batches = fixed_batches(data.val, [len(e) for e in data.val], cfg.train.batch_size, collate)
        self.data.log["padding_fraction"] = {
            "bucketed": padding_fraction(lengths, bucketed_order(lengths, cfg.train.batch_size, 0, 0)),
            "unbucketed": padding_fraction(lengths, bucketed_order(lengths, cfg.train.batch_size, 0, 0, pool_batches=1)),
        }

    def collate(self, examples):
        return collate_chat(examples, self.tok.pad_id)

    def loss(self, model, batch) -> LossOutput:
        loss, count = reply_nll(model, batch)
        return LossOutput(loss, count, tokens=int((batch["input_ids"] != self.tok.pad_id).sum()))

    def evaluate(self, model) -> dict:
        nats, count = 0.0, 0
        for batch in self.val_batches:
            batch_nats, batch_count = reply_nll(model, to_device(batch, self.device))
            nats, count = nats + batch_nats.item(), count + batch_count
        metrics = {"val_loss": nats / count}
        if self.data.eval_tasks:
            task_metrics, replies = evaluate_tasks(model, self.tok, self.data.eval_tasks, self.cfg.eval.max_new_tokens,
                                                   self.cfg.eval.prefer_style, self.dist)
            metrics.update(task_metrics)
            self.last_items = item_verdicts(self.data.eval_tasks, replies, self.cfg.eval.prefer_style)
        e = self.cfg.eval
        unseen, items = self.held_out.evaluate(model, self.tok, e.max_new_tokens, e.prefer_style, self.dist)
        metrics.update(unseen)
        self.last_items.update(items)
        return metrics

    def eval_items(self) -> dict[str, dict[str, bool]]:
        return self.last_items

    def samples(self, model) -> list[dict]:
        prompts = self.cfg.eval.prompts
        replies = generate_replies(model, self.tok, prompts, self.cfg.eval.max_new_tokens)
        return [{"prompt": p, "reply": r.text, "finished": r.finished} for p, r in zip(prompts, replies)]

    def flops_per_token(self) -> float:
        return model_size(self.model.config).flops_per_token


def build(cfg: SFTConfig, runtime: Runtime) -> Built:
    base, cfg = load_for_finetuning(cfg, "cpu")
    data = load_chat_data(cfg.data, base.tokenizer, cfg.model.block_size + 1, cfg.eval.n_tasks)
    stage = SFTStage(cfg, base, data, runtime)
    padding = data.log["padding_fraction"]
    return Built(stage, cfg, base.tokenizer.to_json(), data.log, [
        f"[sft] {len(data.train):,} training / {len(data.val):,} validation conversations from {cfg.init_from}; "
        f"padding {padding['bucketed']:.1%} of batch slots with bucketing ({padding['unbucketed']:.1%} without)"])
