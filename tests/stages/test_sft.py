import json
import signal

from conftest_helpers import REPO, kill_and_resume, metric_losses, read_metrics
from llm.chat import ChatSession
from llm.data.chat import IGNORE, ChatExample, collate_chat, tokenize_conversation
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


def test_sft_loss_falls_and_model_learns_to_stop(sft_run):
    losses = list(metric_losses(sft_run).values())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    evals = read_metrics(sft_run, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["val_loss"] < 0.6 * evals[0]["val_loss"]
    assert evals[0]["stop_rate"] == 0.0 and evals[-1]["stop_rate"] >= 0.9
    samples = [json.loads(x) for x in (sft_run / "samples.jsonl").read_text().splitlines()]
    assert samples[-1]["step"] == evals[-1]["step"] and samples[-1]["samples"][0]["prompt"]
    data = json.loads((sft_run / "data.json").read_text())
    assert data["padding_fraction"]["bucketed"] < data["padding_fraction"]["unbucketed"]


def test_chat_session_stops_at_end_of_turn_and_keeps_history(sft_run):
    loaded = load_gpt(sft_run)
    session = ChatSession(loaded.model, loaded.tokenizer, max_new_tokens=24, temperature=0.0)
    streamed = []
    answer, finished = session.reply("What is the first word in: lemon tiger lamp?", on_token=streamed.append)
    assert finished and streamed[-1] == loaded.tokenizer.end_id
    assert loaded.tokenizer.decode(streamed) == answer
    session.reply("What is the last word in: red fox?")
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    session.max_new_tokens = 32  # a history longer than the context is trimmed from the oldest turns
    for _ in range(6):
        session.reply("What is the first word in: table chair door window?")
    assert len(session.prompt_ids()) <= loaded.model.config.block_size - 32


def test_sft_resume_after_kill_reproduces_losses(sft_args, tmp_path):
    from llm.config import SFTConfig, load_config
    from llm.stages.sft import run

    run(load_config(SFTConfig, REPO / "configs/sft/tiny.yaml", sft_args("train.max_steps=120", "checkpoint.save_every=10", name="a")))
    args = sft_args("train.max_steps=120", "checkpoint.save_every=10", name="b")
    kill_and_resume("scripts/sft.py", "configs/sft/tiny.yaml", args, tmp_path / "runs" / "b", signal.SIGKILL, 40, tmp_path)
    assert metric_losses(tmp_path / "runs" / "b") == metric_losses(tmp_path / "runs" / "a")
