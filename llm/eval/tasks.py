"""Generate replies to held-out instructions and check them: the true exact-match accuracy of a model."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from llm.chat import Reply, generate_replies
from llm.config import PreferenceDataConfig
from llm.data import sampled_pairs
from llm.data.builtin_tasks import UNSEEN_AXES, builtin_tasks, held_out_tasks, target_token_ids, tokens_seen
from llm.data.sources import Sampler
from llm.data.styles import STYLES, judge
from llm.data.tasks import Task, exact_match, is_correct
from llm.distributed import DistInfo, gather_lists, my_block
from llm.model import GPT, weights_digest
from llm.tokenizer import Tokenizer


def checked_samples(model: GPT, tok: Tokenizer, tasks: Sequence[Task], k: int, max_new_tokens: int, temperature: float,
                    top_k: int, seed: int, dist: DistInfo = DistInfo()) -> torch.Tensor:
    """(len(tasks) * k,) 1.0 or 0.0: whether each of k replies sampled per task stopped and the checker accepts it,
    a task's k in a row. Under torchrun the processes split the samples and share them (a collective call)."""
    repeated = [t for t in tasks for _ in range(k)]
    mine = my_block(len(repeated), dist)
    replies = generate_replies(model, tok, [repeated[i].prompt for i in mine], max_new_tokens, temperature, top_k, seed=seed + mine.start)
    replies = gather_lists(replies, dist)
    return torch.tensor([r.finished and is_correct(t, r.text) for t, r in zip(repeated, replies, strict=True)], dtype=torch.float32)


def greedy_replies(model: GPT, tok: Tokenizer, prompts: Sequence[str | Sequence[dict]], max_new_tokens: int,
                   dist: DistInfo = DistInfo()) -> list[Reply]:
    """Greedy replies to every prompt, on every process; under torchrun each process replies to its block of
    the prompts and they share the replies (a collective call: every process must make it)."""
    mine = [prompts[i] for i in my_block(len(prompts), dist)]
    return gather_lists(generate_replies(model, tok, mine, max_new_tokens), dist)


def evaluate_tasks(model: GPT, tok: Tokenizer, tasks: Sequence[Task], max_new_tokens: int, prefer: str = "plain",
                   dist: DistInfo = DistInfo()) -> tuple[dict, list[Reply]]:
    """Greedy replies to `tasks`: exact-match accuracy (overall and by kind), the share that stopped, and
    the rater's view (rater_metrics). Under torchrun the processes split the tasks (a collective call)."""
    replies = greedy_replies(model, tok, [t.prompt for t in tasks], max_new_tokens, dist)
    return task_metrics(tasks, replies, prefer), replies


def task_metrics(tasks: Sequence[Task], replies: Sequence[Reply], prefer: str) -> dict:
    scores = exact_match(tasks, [r.text for r in replies])
    n = max(len(replies), 1)
    return {
        "exact_match": scores["accuracy"],
        "stop_rate": sum(r.finished for r in replies) / n,
        "reply_tokens": sum(len(r.tokens) for r in replies) / n,
        "exact_match_by_kind": scores["by_kind"],
        **rater_metrics(tasks, replies, prefer),
    }


def rater_metrics(tasks: Sequence[Task], replies: Sequence[Reply], prefer: str) -> dict:
    """The built-in rater's verdicts: the share of replies it ranks best-possible (correct, finished, in the
    preferred style) and the share written in each style."""
    verdicts = [judge(t.answer, r.text, r.finished, prefer) for t, r in zip(tasks, replies)]
    n = max(len(verdicts), 1)
    styles = Counter(v.style for v in verdicts)
    return {"best_possible": sum(v.best for v in verdicts) / n,
            "style": {style: styles[style] / n for style in sorted(set(STYLES) | set(styles))}}


def rater_ranked_sampler(run_dir: Path, data: PreferenceDataConfig, model: GPT, tok: Tokenizer, precision, device) -> Sampler:
    """Source builtin_samples' sampler for `model`: its replies to built-in tasks, ranked by the task checker."""

    def generate(prompts: list[str], seed: int) -> list[Reply]:
        with precision.autocast():
            return generate_replies(model.to(device).eval(), tok, prompts, data.sample_max_new_tokens, temperature=data.sample_temperature,
                                    batch_size=128, seed=seed)

    model_key = json.dumps([weights_digest(model), data.sample_temperature, data.sample_max_new_tokens])
    return sampled_pairs.rater_ranked_sampler(run_dir, data, model_key, generate)


def item_verdicts(tasks: Sequence[Task], replies: Sequence[Reply], prefer: str = "plain") -> dict[str, dict[str, bool]]:
    """{"items": {prompt: reply correct}, "preferred": {prompt: the rater ranks the reply best-possible}}, for a
    paired comparison with another model's replies (llm/eval/stats.py).

    The prompt text is the key every stage shares: SFT, PPO and DPO all draw builtin_tasks("val", n, 0, kinds).
    A prompt drawn twice is one item (its first reply), so the sign test does not count it twice.
    """
    correct: dict[str, bool] = {}
    preferred: dict[str, bool] = {}
    for task, reply in zip(tasks, replies, strict=True):
        correct.setdefault(task.prompt, is_correct(task, reply.text))
        preferred.setdefault(task.prompt, judge(task.answer, reply.text, reply.finished, prefer).best)
    return {"items": correct, "preferred": preferred}


@dataclass
class HeldOutSets:
    """The unseen axes' tasks (llm/data/builtin_tasks.py: new words, new phrasings, both), built once so every
    evaluation asks the same ones, and the token ids SFT's targets contain, to split new words by whether
    their tokens were ever trained as targets."""

    tasks: dict[str, list[Task]]
    seen_tokens: frozenset[int]

    @classmethod
    def build(cls, tok: Tokenizer, n: int, kinds: Sequence[str] | None, n_train_answers: int = 20000) -> HeldOutSets:
        if not n:
            return cls({}, frozenset())
        tasks = {axis: held_out_tasks(axis, n, 0, kinds) for axis in UNSEEN_AXES}
        answers = [t.answer for t in builtin_tasks("train", n_train_answers, 0, kinds)]
        return cls(tasks, target_token_ids(tok.encode, answers))

    def evaluate(self, model: GPT, tok: Tokenizer, max_new_tokens: int, prefer: str,
                 dist: DistInfo = DistInfo()) -> tuple[dict, dict[str, dict[str, bool]]]:
        """Metrics on each axis ("new_words/exact_match", ...; new words also split by whether every token of the
        answer was a training target) and each axis's per-prompt verdicts, for eval_items.json."""
        metrics: dict = {}
        items: dict[str, dict[str, bool]] = {}
        for axis, tasks in self.tasks.items():
            replies = greedy_replies(model, tok, [t.prompt for t in tasks], max_new_tokens, dist)
            found = task_metrics(tasks, replies, prefer)
            metrics.update({f"{axis}/{key}": found[key] for key in ("exact_match", "best_possible")})
            items[axis] = item_verdicts(tasks, replies, prefer)["items"]
            if axis == "new_words":
                metrics.update(self.by_token_coverage(tok, tasks, replies))
        return metrics, items

    def by_token_coverage(self, tok: Tokenizer, tasks: Sequence[Task], replies: Sequence[Reply]) -> dict:
        groups: dict[str, list[bool]] = {"seen_tokens": [], "unseen_tokens": []}
        for task, reply in zip(tasks, replies):
            group = "seen_tokens" if tokens_seen(tok.encode, task.answer, self.seen_tokens) else "unseen_tokens"
            groups[group].append(is_correct(task, reply.text))
        out = {}
        for group, verdicts in groups.items():
            out[f"new_words/{group}_n"] = len(verdicts)
            out[f"new_words/{group}_exact_match"] = sum(verdicts) / len(verdicts) if verdicts else 0.0
        return out
