"""This project -> transformers: the same logits, greedy tokens, chat ids and reward scores; what is refused."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("transformers")

from conftest_helpers import PYTHON, REPO  # noqa: E402
from llm.config import ModelConfig  # noqa: E402
from llm.errors import ConfigError  # noqa: E402
from llm.generate import SamplingParams, generate  # noqa: E402
from llm.hf.configs import architecture_of  # noqa: E402
from llm.hf.export import build, export_checkpoint, write_folder  # noqa: E402
from llm.hf.read import SCORE_BIAS  # noqa: E402
from llm.load import load_reward_model  # noqa: E402
from llm.model import GPT  # noqa: E402
from llm.reward_model import RewardModel, score_sequences  # noqa: E402
from llm.tokenizer import render_conversation, render_prompt  # noqa: E402

LLAMA = dict()  # the default block
LLAMA_BIASED = dict(bias=True, tie_embeddings=False, rope_theta=500.0, norm_eps=1e-5, mlp_hidden=96)
GPT2 = dict(position="learned", norm="layernorm", mlp="gelu", bias=True)
GPT2_PLAIN = dict(position="learned", norm="layernorm", mlp="gelu_tanh", bias=False, tie_embeddings=False)
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Reverse the words:  red green\nblue ünï"},
    {"role": "assistant", "content": " blue green red"},
    {"role": "user", "content": "And <|end|> this?"},
]


def random_gpt(vocab_size: int, **options) -> GPT:
    """A small GPT with every weight drawn wide (norm gains and biases too), so a wrongly mapped tensor shows."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32, **options)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


@pytest.mark.parametrize("options, model_class", [(LLAMA, "LlamaForCausalLM"), (LLAMA_BIASED, "LlamaForCausalLM"),
                                                  (GPT2, "GPT2LMHeadModel"), (GPT2_PLAIN, "GPT2LMHeadModel")])
def test_transformers_computes_the_same_logits(tokenizer, options, model_class):
    model = random_gpt(tokenizer.vocab_size, **options)
    hf_model = build(model, None, tokenizer)
    ids = torch.randint(0, tokenizer.vocab_size, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf_model(ids).logits
    assert type(hf_model).__name__ == model_class
    assert ours.std() > 0.3  # logits far from uniform (0.02-scale init gives about 0.05): a wrong tensor shows
    assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("options", [LLAMA, GPT2_PLAIN])  # GPT2's wide tied embedding repeats one token: untied here
def test_greedy_generation_gives_the_same_tokens(tokenizer, options):
    model = random_gpt(tokenizer.vocab_size, **options)
    hf_model = build(model, None, tokenizer)
    chosen = set()
    for text in ("Reverse the words: red green blue", "What is 7 + 5?", "Say module 3 times."):
        prompt = render_prompt(tokenizer, [{"role": "user", "content": text}])
        stops = (tokenizer.end_id, tokenizer.eos_id)
        ours = generate(model, [prompt], SamplingParams(12, 0.0, stop_ids=stops), tokenizer.pad_id).tokens[0]
        theirs = hf_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
        assert ours == theirs
        chosen |= set(ours)
    assert len(chosen) > 3  # not one token repeated everywhere: the test compares real choices


def test_chat_template_gives_the_ids_of_render_conversation_and_render_prompt(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    write_folder(random_gpt(tokenizer.vocab_size), None, tokenizer, tmp_path / "export")
    config = json.loads((tmp_path / "export" / "tokenizer_config.json").read_text())
    assert "chat_template" in config
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "export")
    full = hf_tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
    prompt = hf_tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False, add_generation_prompt=True)
    assert full == render_conversation(tokenizer, CONVERSATION)[0]
    assert prompt == render_prompt(tokenizer, CONVERSATION)
    assert hf_tok.decode(full[5:12]) == tokenizer.decode(full[5:12])
    with pytest.raises(Exception, match="unknown role 'robot'|unknown role robot"):
        hf_tok.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


@pytest.mark.parametrize("options, exact", [(GPT2, True), (LLAMA, False), (LLAMA_BIASED, False)])
def test_an_exported_reward_model_scores_as_score_sequences(tokenizer, tmp_path, options, exact):
    from transformers import AutoModelForSequenceClassification

    reward = RewardModel(random_gpt(tokenizer.vocab_size, **options)).eval()
    with torch.no_grad():
        reward.head.bias.fill_(0.75)
    sequences = [render_conversation(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])[0]
                 for q, a in [("What is 7 + 5?", "12"), ("Say module 3 times.", "module module module"), ("Hi", "")]]
    ours = torch.tensor(score_sequences(reward, sequences, tokenizer.pad_id))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        write_folder(reward.trunk, reward.head, tokenizer, tmp_path / "export")
    assert len([w for w in warned if SCORE_BIAS in str(w.message)]) == (0 if exact else 1)  # the user is told of the shift
    hf_model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "export").eval()
    width = max(len(s) for s in sequences)
    ids = torch.tensor([s + [tokenizer.pad_id] * (width - len(s)) for s in sequences])  # right-padded, as transformers pads
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=ids != tokenizer.pad_id).logits[:, 0]
    shift = 0.0 if exact else getattr(hf_model.config, SCORE_BIAS)
    assert shift == (0.0 if exact else pytest.approx(0.75))
    assert (ours - (theirs + shift)).abs().max() < 1e-5
    # and back: the folder reads as a reward checkpoint that scores exactly as before
    again, _, _ = load_reward_model(f"hf:{tmp_path / 'export'}")
    assert (torch.tensor(score_sequences(again, sequences, tokenizer.pad_id)) - ours).abs().max() < 1e-5


@pytest.mark.parametrize("options, named", [
    (dict(norm="layernorm"), "model.norm=layernorm"), (dict(mlp="gelu"), "model.mlp=gelu"),
    (dict(position="learned", norm="layernorm", mlp="swiglu"), "model.mlp=swiglu"),
    (dict(position="learned"), "model.norm=rmsnorm"), (dict(token_shift=True), "model.token_shift=true"),
])
def test_a_block_with_no_transformers_equivalent_is_refused_naming_the_option(options, named):
    with pytest.raises(ConfigError) as raised:
        architecture_of(ModelConfig(**options))
    assert named in str(raised.value) and "\n" not in str(raised.value)


def test_export_refuses_a_folder_that_is_not_empty(sft_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    with pytest.raises(ConfigError, match="already exists"):
        export_checkpoint(sft_run, tmp_path / "taken")


ANSWER = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
model, tok = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
replies = []
for prompt in prompts:
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):]
    replies.append(tok.decode(out, skip_special_tokens=True))
print(json.dumps(replies))
"""


@pytest.mark.slow
def test_an_exported_sft_model_answers_as_sample_py_in_a_fresh_process(sft_run, tmp_path):
    prompts = ["What is the first word in: red green blue?", "What is the last word in: value string file?"]
    export_checkpoint(sft_run, tmp_path / "export")
    sample = subprocess.run([PYTHON, "scripts/sample.py", "--checkpoint", str(sft_run), "--chat", "--temperature", "0",
                             "--max-new-tokens", "32", "--no-stream", *[a for p in prompts for a in ("--prompt", p)]],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert sample.returncode == 0, sample.stderr
    ours = [block.split("\n", 1)[1].rstrip("\n") for block in sample.stdout.split("--- sample ")[1:]]
    theirs = subprocess.run([sys.executable, "-c", ANSWER, str(tmp_path / "export"), json.dumps(prompts)],
                            capture_output=True, text=True, timeout=120)
    assert theirs.returncode == 0, theirs.stderr
    assert json.loads(theirs.stdout.strip().splitlines()[-1]) == ours, ours
    assert all(reply.strip() for reply in ours), ours  # replies to compare, not two empty strings
