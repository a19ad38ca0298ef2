"""transformers -> this project (init_from=hf:...): the same logits, the special tokens added, what is refused,
and a GPT-2-architecture model through SFT and back out."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest_helpers import PYTHON, REPO, metric_losses, sft_overrides  # noqa: E402
from llm.errors import CheckpointError, ConfigError  # noqa: E402
from llm.load import load_gpt, read  # noqa: E402
from llm.tokenizer import SPECIAL_TOKENS  # noqa: E402

FOREIGN_VOCAB = 400


@pytest.fixture(scope="module")
def foreign_tokenizer(corpus_file):
    """A byte-level BPE with GPT-2's one special token and none of ours, as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=FOREIGN_VOCAB, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([corpus_file.read_text()[:100_000]], trainer=trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def save_foreign(folder, config, tokenizer, scale: float | None = 0.3):
    """A randomly initialised transformers model saved with save_pretrained (weights drawn wide unless scale is None)."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    if scale is not None:
        with torch.no_grad():
            for param in model.parameters():
                param.normal_(0.0, scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


LLAMA_GQA = dict(vocab_size=FOREIGN_VOCAB, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=5e5, max_position_embeddings=64, tie_word_embeddings=False,
                 attention_bias=True, mlp_bias=True)
# GPT-2's own activation (gelu_new) and tied embeddings; <|endoftext|> is id 0 of the foreign tokenizer
GPT2_SMALL = dict(vocab_size=FOREIGN_VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)


@pytest.mark.parametrize("config_class, options", [("LlamaConfig", LLAMA_GQA), ("GPT2Config", GPT2_SMALL)])
def test_an_imported_model_computes_the_same_logits(foreign_tokenizer, tmp_path, config_class, options):
    theirs = save_foreign(tmp_path / "model", getattr(transformers, config_class)(**options), foreign_tokenizer)
    loaded = load_gpt(f"hf:{tmp_path / 'model'}")
    ids = torch.randint(0, FOREIGN_VOCAB, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, expected = loaded.model(ids), theirs(ids).logits
    assert ours.shape[-1] == FOREIGN_VOCAB + len(SPECIAL_TOKENS)
    assert (ours[..., :FOREIGN_VOCAB] - expected).abs().max() < 1e-5
    # each added token's row is the mean of the learned rows, so its logit is the mean logit
    assert torch.allclose(ours[..., FOREIGN_VOCAB:], expected.mean(dim=-1, keepdim=True).expand(-1, -1, len(SPECIAL_TOKENS)), atol=1e-5)


def test_the_special_tokens_are_added_and_text_encodes_as_before(foreign_tokenizer, tmp_path):
    save_foreign(tmp_path / "model", transformers.GPT2Config(**GPT2_SMALL), foreign_tokenizer)
    tok = load_gpt(f"hf:{tmp_path / 'model'}").tokenizer
    text = "The first word in: value string file"
    assert tok.encode(text) == foreign_tokenizer.encode(text, add_special_tokens=False)
    assert sorted(tok.special_ids) == list(range(FOREIGN_VOCAB, FOREIGN_VOCAB + len(SPECIAL_TOKENS)))
    assert tok.decode([tok.bos_id, *tok.encode(text), tok.end_id]) == text


def test_an_unsupported_architecture_is_refused_listing_the_supported(tmp_path):
    transformers.GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1).save_pretrained(tmp_path / "neox")
    with pytest.raises(CheckpointError, match=r"a gpt_neox model; hf: imports the architectures gpt2, llama$"):
        read(f"hf:{tmp_path / 'neox'}")


@pytest.mark.parametrize("change, named", [
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}), "rope_type='linear'"),
    (dict(attention_bias=True, mlp_bias=False), "mlp_bias=False"),
])
def test_a_llama_setting_we_do_not_compute_is_refused_naming_it(tmp_path, change, named):
    transformers.LlamaConfig(**{**LLAMA_GQA, **change}).save_pretrained(tmp_path / "llama")
    with pytest.raises(CheckpointError) as raised:
        read(f"hf:{tmp_path / 'llama'}")
    assert named in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_model_says_downloads_are_off(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder.*HF_HUB_OFFLINE=0"):
        read(f"hf:{tmp_path / 'nothing-here'}")


def test_without_transformers_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[hf\]'"):
        read("hf:anything")


@pytest.mark.slow
def test_a_gpt2_model_goes_through_sft_and_exports_again(foreign_tokenizer, tmp_path):
    from llm.config import SFTConfig, load_config
    from llm.stages.launch import run_stage

    config = transformers.GPT2Config(**{**GPT2_SMALL, "n_embd": 64, "n_positions": 128})
    save_foreign(tmp_path / "gpt2", config, foreign_tokenizer, scale=None)  # transformers' own initialisation
    overrides = sft_overrides(f"hf:{tmp_path / 'gpt2'}", tmp_path / "runs") + [
        "data.builtin_train=320", "train.max_steps=20", "train.eval_every=0", "checkpoint.save_every=0", "optim.lr=3e-3",
        "eval.n_tasks=8", "eval.unseen=0"]
    run_stage("sft", load_config(SFTConfig, REPO / "configs/sft/tiny.yaml", overrides))
    losses = metric_losses(tmp_path / "runs" / "sft")
    first, last = [sum(losses[s] for s in steps) / 5 for steps in (range(1, 6), range(16, 21))]
    assert last < 0.85 * first  # it learns: the replies' loss falls well below the untrained model's (6.0 -> 4.3 here)
    done = subprocess.run([PYTHON, "scripts/export.py", "--checkpoint", str(tmp_path / "runs" / "sft"), "--out", str(tmp_path / "export")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "as GPT2LMHeadModel" in done.stdout
    tuned = load_gpt(tmp_path / "runs" / "sft")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    ids = torch.randint(0, tuned.model.config.vocab_size, (2, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (tuned.model(ids) - exported(ids).logits).abs().max() < 1e-5
    assert tuned.model.config.mlp == "gelu_tanh" and tuned.model.config.position == "learned"
