"""Low-rank adapters: a no-op at first, only they train, switched off they are the base, PEFT reads them the same,
a killed run resumes bit for bit, and the settings refuse what they cannot do in one line."""

from __future__ import annotations

import signal

import pytest
import torch

from conftest_helpers import REPO, kill_and_resume, metric_losses, sft_overrides
from llm.config import DPOConfig, LoRAConfig, ModelConfig, PretrainConfig, SFTConfig, load_config
from llm.errors import ConfigError
from llm.load import load_gpt, read
from llm.lora import AdaptersOff, add_adapters, is_adapter
from llm.model import GPT
from llm.stages.launch import run_stage
from llm.train import checkpoint as ckpt

LORA = ["lora.rank=4", "lora.alpha=8"]


def small_gpt(**options) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32, **options)).eval()


def test_adapters_start_as_the_base_and_switched_off_are_it_exactly():
    model = small_gpt()
    ids = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(ids)
        add_adapters(model, LoRAConfig(rank=4, targets=["attention", "mlp"]))
        assert torch.equal(model(ids), before)  # B starts at zero
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_()
        assert (model(ids) - before).abs().max() > 1e-2
        adapted = model(ids)
        reference = AdaptersOff(model.train())
        assert torch.equal(reference(ids), before)
        assert model.training  # the policy's mode given back
        assert torch.equal(model.eval()(ids), adapted)  # and its adapters on again
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained and all(is_adapter(name) for name in trained)
    assert not list(reference.state_dict()) and not any(is_adapter(name) for name, _ in reference.named_parameters())


def test_lora_on_pretraining_or_an_unknown_target_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"^defaults: unknown key 'lora'$"):
        load_config(PretrainConfig, None, ["lora.rank=8"])
    with pytest.raises(ConfigError, match=r"key 'lora.targets' has 'q_proj', which matches no layer") as caught:
        load_config(SFTConfig, None, ["lora.rank=8", "lora.targets=[attention, q_proj]"])
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def lora_sft_run(pretrained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-sft")
    overrides = [*sft_overrides(pretrained_run, out, "sft"), *LORA, "train.max_steps=30", "train.eval_every=30", "checkpoint.save_every=30"]
    run_stage("sft", load_config(SFTConfig, None, overrides))
    return out / "sft"


def test_only_the_adapters_change_and_a_next_stage_reads_them_folded(lora_sft_run, pretrained_run):
    base = read(pretrained_run, "last").weights
    saved = ckpt.load(lora_sft_run, "last")
    assert saved.meta["lora"]["rank"] == 4 and saved.meta["lora"]["alpha"] == 8
    adapters = {name: t for name, t in saved.weights.items() if is_adapter(name)}
    assert len(adapters) == 2 * 4 * 2  # A and B on qkv, proj, up and down of both blocks
    assert all(torch.equal(saved.weights[name], base[name]) for name in base)
    assert all(bool(t.abs().sum() > 0) for name, t in adapters.items() if name.endswith("lora_B"))
    folded = load_gpt(lora_sft_run, prefer="last").model  # what DPO, PPO, sampling and evaluation start from
    ids = torch.randint(0, folded.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        unfolded = add_adapters(GPT(folded.config), LoRAConfig(rank=4, alpha=8)).eval()
        unfolded.load_state_dict(saved.weights)
        assert (folded(ids) - unfolded(ids)).abs().max() < 1e-5


def test_dpo_with_adapters_has_no_second_copy_as_reference(lora_sft_run, tmp_path):
    from llm.stages import dpo
    from llm.train.runtime import setup_runtime

    overrides = [f"init_from={lora_sft_run}", f"out_dir={tmp_path}", *LORA, "data.sources=[{path: builtin}]", "data.builtin_train=40",
                 "data.builtin_val=8", "eval.n_prompts=0", "train.dtype=float32"]
    cfg = load_config(DPOConfig, REPO / "configs/dpo/tiny.yaml", overrides)
    stage = dpo.build(cfg, setup_runtime(cfg)).stage
    own, shared = {id(p) for p in stage.model.parameters()}, list(stage.reference.parameters())
    assert shared and all(id(p) in own for p in shared)


def test_peft_reads_the_exported_adapter_with_the_same_logits(lora_sft_run, tmp_path):
    peft = pytest.importorskip("peft", reason="the PEFT round trip needs the peft extra (pip install -e '.[hf]')")
    transformers = pytest.importorskip("transformers")
    from llm.hf.export import export_checkpoint

    export_checkpoint(lora_sft_run, tmp_path / "out")
    ours = load_gpt(lora_sft_run).model
    ids = torch.randint(0, ours.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "out" / "adapter")
    with torch.no_grad():
        assert (ours(ids) - theirs.eval()(ids).logits).abs().max() < 1e-4
        again = load_gpt(f"hf:{tmp_path / 'out' / 'adapter'}").model  # init_from accepts the adapter on its base
        assert (ours(ids) - again(ids)).abs().max() < 1e-4
    export_checkpoint(lora_sft_run, tmp_path / "merged", merge=True)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter").exists()
    with torch.no_grad():
        assert (ours(ids) - merged(ids).logits).abs().max() < 1e-4


@pytest.mark.parametrize("options", [dict(), dict(position="learned", norm="layernorm", mlp="gelu", bias=True)], ids=["llama", "gpt2"])
def test_peft_computes_our_adapted_logits_on_both_architectures(tokenizer, options, tmp_path):
    # GPT-2's fused c_attn and its Conv1D layers (fan_in_fan_out), Llama's q/k/v and gate/up cut from our fused layers
    peft = pytest.importorskip("peft", reason="the PEFT round trip needs the peft extra (pip install -e '.[hf]')")
    from llm.hf.adapters import to_peft, write_peft
    from llm.hf.configs import architecture_of
    from llm.hf.export import build
    from llm.lora import describe

    torch.manual_seed(0)
    model = add_adapters(GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, **options)),
                         LoRAConfig(rank=4, alpha=8)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0.0, 0.3)
    weights = model.state_dict()
    base = GPT(model.config).eval()
    base.load_state_dict({k: v for k, v in weights.items() if not is_adapter(k)})
    write_peft(tmp_path, *to_peft(weights, describe(model), architecture_of(model.config), 2, "unused"))
    theirs = peft.PeftModel.from_pretrained(build(base, None, tokenizer), tmp_path).eval()
    ids = torch.randint(0, tokenizer.vocab_size, (2, 16), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours = model(ids)
        assert (ours - base(ids)).abs().max() > 0.1  # the adapters matter
        assert (ours - theirs(ids).logits).abs().max() < 1e-4


@pytest.mark.slow
def test_lora_sft_resume_after_kill_reproduces_losses(sft_args, tmp_path):
    # dropout on the adapters' input: a resume that lost the RNG, the adapters or their AdamW moments changes a loss
    extra = [*LORA, "lora.dropout=0.1", "train.max_steps=80", "checkpoint.save_every=10"]
    run_stage("sft", load_config(SFTConfig, REPO / "configs/sft/tiny.yaml", sft_args(*extra, name="a")))
    args = sft_args(*extra, name="b")
    kill_and_resume("scripts/sft.py", "configs/sft/tiny.yaml", args, tmp_path / "runs" / "b", signal.SIGKILL, 30, tmp_path)
    assert metric_losses(tmp_path / "runs" / "b") == metric_losses(tmp_path / "runs" / "a")
