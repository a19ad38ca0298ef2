"""Start-up reads each checkpoint once and builds independent copies from it (issue 14, item 5)."""

from collections import Counter

import pytest
import torch

from conftest_helpers import ppo_overrides
from llm.config import PPOConfig, load_config
from llm.train import checkpoint as ckpt


def count_reads(monkeypatch) -> tuple[Counter, Counter]:
    """Counters of weights reads per checkpoint folder and of sha256 computations per file."""
    reads, hashes = Counter(), Counter()
    read_weights, sha256_file = ckpt.read_weights, ckpt.sha256_file

    def counted_read(path):
        reads[path.parent] += 1
        return read_weights(path)

    def counted_hash(path):
        hashes[path] += 1
        return sha256_file(path)

    monkeypatch.setattr(ckpt, "read_weights", counted_read)
    monkeypatch.setattr(ckpt, "sha256_file", counted_hash)
    return reads, hashes


def shared_tensors(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    ptrs = {t.data_ptr() for t in b.state_dict().values()}
    return {name for name, t in a.state_dict().items() if t.data_ptr() in ptrs}


@pytest.mark.parametrize("extra", [[], ["ppo.critic_init=policy", "eval.reward_model={reward}"],
                                   ["ppo.advantage=rloo", "ppo.samples_per_prompt=2"]],
                         ids=["critic-from-reward", "critic-from-policy-and-judge", "rloo"])
def test_ppo_build_reads_each_checkpoint_once(sft_run, reward_run, tmp_path, monkeypatch, extra):
    from llm.stages.ppo import build
    from llm.train.runtime import setup_runtime

    cfg = load_config(PPOConfig, None, ppo_overrides(sft_run, reward_run, tmp_path, "ppo") + [e.format(reward=reward_run) for e in extra])
    reads, hashes = count_reads(monkeypatch)
    stage = build(cfg, setup_runtime(cfg)).stage
    assert sorted(reads.values()) == [1, 1] and {p.parents[1] for p in reads} == {sft_run, reward_run}
    assert set(hashes.values()) == {1}
    policy, critic, source = stage.model.policy, stage.model.critic, stage.source
    assert not shared_tensors(policy, source.reference)
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), source.reference.state_dict().values()))
    assert all(p.requires_grad for p in policy.parameters()) and not any(p.requires_grad for p in source.reference.parameters())
    if critic is not None:
        assert not shared_tensors(critic, source.reward_model) and not shared_tensors(critic, policy)
        assert all(p.requires_grad for p in critic.parameters())
    assert stage.evaluator.reward_model is source.reward_model  # the same checkpoint: not read again for the judge


def test_dpo_reads_init_from_once(sft_run, tmp_path, monkeypatch):
    import llm.stages.dpo as dpo
    from llm.config import DPOConfig
    from llm.stages.launch import run_stage

    class Built(Exception):
        """Raised where the pairs load: the policy and the reference are built by then."""

    def stop(*args, **kwargs):
        raise Built

    monkeypatch.setattr(dpo, "load_pair_data", stop)
    cfg = load_config(DPOConfig, None, [f"init_from={sft_run}", f"out_dir={tmp_path}", "name=dpo",
                                        "train.dtype=float32", "train.progress=false"])
    reads, hashes = count_reads(monkeypatch)
    with pytest.raises(Built):
        run_stage("dpo", cfg)
    assert [p.parents[1] for p in reads] == [sft_run] and list(reads.values()) == [1]
    assert set(hashes.values()) == {1}
