import json
import signal

import pytest
import torch

from conftest_helpers import FOUR_ITEMS, REPO, check_eval_items, kill_and_resume, metric_losses, read_metrics, sft_overrides
from llm.chat import ChatSession
from llm.data.builtin_tasks import builtin_tasks
from llm.data.chat import IGNORE, ChatExample, collate_chat, task_conversation, tokenize_conversation
from llm.eval.tasks import evaluate_tasks
from llm.load import load_gpt

CONVERSATION = [
    {"role": "user", "content": "one two three four five six seven"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "eight nine ten eleven twelve thirteen fourteen fifteen"},
    {"role": "assistant", "content": "second answer is longer than the first"},
]


def test_targets_cover_exactly_assistant_tokens_and_end(tokenizer):
    example, truncated = tokenize_conversation(tokenizer, CONVERSATION, max_len=200)
    assert not truncated
    batch = collate_chat([example, ChatExample(example.ids[:5], example.mask[:5])], tokenizer.pad_id)
    learned = [t for t in batch["targets"][0].tolist() if t != IGNORE]
    expected = []
    for message in CONVERSATION[1::2]:
        expected += tokenizer.encode(message["content"]) + [tokenizer.end_id]
    assert learned == expected
    assert (batch["targets"][1] == IGNORE).all()  # padding and prompt-only rows carry no loss
    assert batch["input_ids"].shape == batch["targets"].shape


def test_long_conversation_is_cut_at_a_turn_boundary(tokenizer):
    full, _ = tokenize_conversation(tokenizer, CONVERSATION, max_len=200)
    first_exchange, _ = tokenize_conversation(tokenizer, CONVERSATION[:2], max_len=200)
    cut, truncated = tokenize_conversation(tokenizer, CONVERSATION, max_len=len(full.ids) - 1)
    assert truncated and cut.ids == first_exchange.ids and cut.ids[-1] == tokenizer.end_id
    none, truncated = tokenize_conversation(tokenizer, CONVERSATION, max_len=5)
    assert none is None and truncated


def end_probability(run, tasks) -> float:
    """The mean probability the model gives <|end|> right after each task's reference answer (teacher-forced)."""
    loaded = load_gpt(run)
    tok = loaded.tokenizer
    examples = [tokenize_conversation(tok, task_conversation(t), loaded.model.config.block_size + 1)[0] for t in tasks]
    batch = collate_chat(examples, tok.pad_id)
    with torch.no_grad():
        probs = loaded.model(batch["input_ids"]).float().softmax(-1)
    return float(probs[batch["targets"] == tok.end_id][:, tok.end_id].mean())


def test_sft_loss_falls_and_model_learns_to_stop(sft_run, pretrained_run):
    # Seen over 22 runs of the fixture chain (train.seed 0-9 and 1337, each with AVX-512 and with AVX2 kernels):
    # train loss ratio 0.48-0.64, held-out loss ratio 0.42-0.56; both bounds are more than 0.15 away.
    losses = list(metric_losses(sft_run).values())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10
    evals = read_metrics(sft_run, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["val_loss"] < 0.75 * evals[0]["val_loss"]
    # Greedy stop rate on 40 held-out tasks is a cliff (0.35-1.0 over those runs): only "some replies stop
    # where none did" is asserted on it. Teacher-forced, the chance of <|end|> after a held-out reference
    # answer was 0.53-0.75 after SFT and below 1e-4 before it with single-token operands; with the word pool's
    # multi-token and made-up words (llm/data/builtin_tasks.py) it is 0.23 after SFT and 6e-5 before: 0.1 is far from both.
    assert evals[0]["stop_rate"] == 0.0 and evals[-1]["stop_rate"] > 0.0
    tasks = builtin_tasks("val", 60, 0, ["first_word", "last_word"])
    assert end_probability(pretrained_run, tasks) < 0.01 and end_probability(sft_run, tasks) > 0.1
    samples = [json.loads(x) for x in (sft_run / "samples.jsonl").read_text().splitlines()]
    assert samples[-1]["step"] == evals[-1]["step"] and samples[-1]["samples"][0]["prompt"]
    data = json.loads((sft_run / "data.json").read_text())
    assert data["padding_fraction"]["bucketed"] < data["padding_fraction"]["unbucketed"]


def test_sft_keeps_per_prompt_verdicts_for_paired_comparisons(sft_run):
    # step 0 is the base model in the chat template; "latest" is the evaluation final.json holds, the report's figure
    record = check_eval_items(sft_run, builtin_tasks("val", 40, 0, ["first_word", "last_word"]))
    assert set(record) == {"step0", "latest", "best"}  # val_loss fell, so a best checkpoint was kept after step 0
    assert json.loads((sft_run / "best.json").read_text())["checkpoint"] == record["best"]["checkpoint"]


@pytest.fixture(scope="module")
def fitted_sft(tmp_path_factory, pretrained_run):
    """SFT on four tasks until the model knows them: 40 steps. With 22 base models (train.seed 0-9 and 1337,
    AVX-512 and AVX2 kernels) 30 steps were enough for every one and 20 for only some; 40 fitted all of them
    under both kernels."""
    from llm.config import SFTConfig, load_config
    from llm.stages.launch import run_stage

    # plain replies, as when the 40 steps were measured: a styled reply is longer and fits later
    cfg = load_config(SFTConfig, None, sft_overrides(pretrained_run, tmp_path_factory.mktemp("fit"), "fit") + FOUR_ITEMS + [
        "train.max_steps=40", "eval.n_tasks=0", "eval.unseen=0", "data.styles.filler=0", "data.styles.disclaimer=0"])
    run_stage("sft", cfg)
    return cfg.run_dir, builtin_tasks("train", 4, cfg.data.seed, cfg.data.builtin_kinds)


def test_sft_overfits_four_tasks_and_stops(fitted_sft):
    # A working loss on the right tokens (the reply and its <|end|>) fits four tasks exactly: greedy
    # replies are the answers and all stop. A step that did nothing leaves the base model, which never stops.
    run_dir, tasks = fitted_sft
    loaded = load_gpt(run_dir, prefer="last")
    metrics, replies = evaluate_tasks(loaded.model, loaded.tokenizer, tasks, max_new_tokens=12)
    assert metrics["exact_match"] == 1.0 and metrics["stop_rate"] == 1.0, [r.text for r in replies]


def test_chat_session_stops_at_end_of_turn_and_keeps_history(fitted_sft):
    run_dir, tasks = fitted_sft  # a task the model was fitted to: its greedy reply stops whatever the CPU
    loaded = load_gpt(run_dir, prefer="last")
    session = ChatSession(loaded.model, loaded.tokenizer, max_new_tokens=24, temperature=0.0)
    streamed = []
    answer, finished = session.reply(tasks[0].prompt, on_token=streamed.append)
    assert finished and streamed[-1] == loaded.tokenizer.end_id and answer == tasks[0].answer
    assert loaded.tokenizer.decode(streamed) == answer
    session.reply("What is the last word in: red fox?")
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    session.max_new_tokens = 32  # a history longer than the context is trimmed from the oldest turns
    for _ in range(6):
        session.reply("What is the first word in: table chair door window?")
    assert len(session.prompt_ids()) <= loaded.model.config.block_size - 32


def test_sft_resume_after_kill_reproduces_losses(sft_args, tmp_path):
    from llm.config import SFTConfig, load_config
    from llm.stages.launch import run_stage

    run_stage("sft", load_config(SFTConfig, REPO / "configs/sft/tiny.yaml",
                                 sft_args("train.max_steps=120", "checkpoint.save_every=10", name="a")))
    args = sft_args("train.max_steps=120", "checkpoint.save_every=10", name="b")
    kill_and_resume("scripts/sft.py", "configs/sft/tiny.yaml", args, tmp_path / "runs" / "b", signal.SIGKILL, 40, tmp_path)
    assert metric_losses(tmp_path / "runs" / "b") == metric_losses(tmp_path / "runs" / "a")
    items = [json.loads((tmp_path / "runs" / name / "eval_items.json").read_text()) for name in "ab"]
    assert items[0] == items[1]
