import json

import pytest

from conftest_helpers import check_eval_items, metric_losses, ppo_overrides, read_metrics
from llm.config import PPOConfig, load_config
from llm.errors import ConfigError, TrainingError
from llm.stages.launch import run_stage
from llm.train import checkpoint as ckpt


def config(sft_run, reward_run, out, name, *extra):
    return load_config(PPOConfig, None, ppo_overrides(sft_run, reward_run, out, name) + list(extra))


def test_ppo_runs_logs_rollout_stats_and_compares_with_sft(sft_run, reward_run, tmp_path):
    cfg = config(sft_run, reward_run, tmp_path, "ppo")
    result = run_stage("ppo", cfg)
    assert result.reason == "max_steps" and result.step == 12
    train_lines = read_metrics(cfg.run_dir, "train")
    assert {line["iteration"] for line in train_lines} == {0, 1, 2}  # 4 steps per iteration
    for key in ("objective/kl", "objective/scores", "objective/entropy", "policy/clipfrac", "loss/value", "kl_coef", "reward/model"):
        assert key in train_lines[-1]
    assert "reward/checker" not in train_lines[-1]  # the default reward is the reward model's alone
    evals = read_metrics(cfg.run_dir, "eval")
    assert evals[0]["kl"] == 0 and evals[0]["win_rate"] == 0.5 and evals[0]["exact_match"] == evals[0]["sft_exact_match"]
    assert {"reward", "sft_reward", "stop_rate", "reply_tokens"} <= set(evals[-1])
    samples = [json.loads(x) for x in (cfg.run_dir / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "sft", "policy", "answer"} <= set(samples[-1]["samples"][0])
    from llm.data.builtin_tasks import builtin_tasks

    # step 0's verdicts are the SFT model's, the start every PPO figure is paired with
    record = check_eval_items(cfg.run_dir, builtin_tasks("val", 10, 0, ["first_word", "last_word"]))
    assert sum(record["step0"]["items"].values()) / 10 == evals[-1]["sft_exact_match"]
    from llm.load import load_gpt

    assert load_gpt(cfg.run_dir).checkpoint.meta["kind"] == "actor_critic"


@pytest.mark.parametrize("advantage", [[], ["ppo.advantage=rloo", "ppo.samples_per_prompt=4", "ppo.rollout_batch=2"]], ids=["gae", "rloo"])
def test_ppo_resume_reproduces_the_next_iterations(sft_run, reward_run, tmp_path, advantage):
    straight = config(sft_run, reward_run, tmp_path, "a", *advantage)
    run_stage("ppo", straight)
    first = config(sft_run, reward_run, tmp_path, "b", "train.max_steps=6", *advantage)  # stops mid-iteration 1
    run_stage("ppo", first)
    second = config(sft_run, reward_run, tmp_path, "b", *advantage)
    run_stage("ppo", second, resume=True)
    assert metric_losses(second.run_dir) == metric_losses(straight.run_dir)
    items = [json.loads((c.run_dir / "eval_items.json").read_text()) for c in (straight, second)]
    assert items[0] == items[1]


def test_kl_guardrail_stops_and_keeps_the_last_checkpoint(sft_run, reward_run, tmp_path):
    # a ceiling below what one update reaches: the guardrail fires at the second rollout. The k3 estimate is
    # never negative (0.55-0.79 per reply there, over 6 SFT models and both kernels); the default k1 can
    # average below zero over 8 replies, and did with one SFT model (train.seed=1, AVX2 kernels), letting the
    # run go on until the ratio guardrail stopped it. max_ratio is raised so that only the KL one can fire.
    cfg = config(sft_run, reward_run, tmp_path, "guard", "ppo.max_kl=1e-9", "ppo.kl_estimator=k3", "ppo.max_ratio=1e9", "optim.lr=3e-3",
                 "checkpoint.save_every=4")
    with pytest.raises(TrainingError, match=r"PPO guardrail: KL to the reference .* past ppo.max_kl=1e-09"):
        run_stage("ppo", cfg)
    kept = ckpt.step_dirs(cfg.run_dir / "checkpoints")
    assert [p.name for p in kept] == ["step_0000004"]
    ckpt.verify(kept[0])
    assert not (cfg.run_dir / "final.json").exists()


def test_ptx_loss_is_mixed_in(sft_run, reward_run, tmp_path):
    cfg = config(sft_run, reward_run, tmp_path, "ptx", "ppo.ptx_coef=0.5", "ppo.ptx_batch=4", "train.max_steps=4", "train.eval_every=0",
                 "train.eval_at_start=false", "ppo.builtin_prompts=40")
    run_stage("ppo", cfg)
    lines = read_metrics(cfg.run_dir, "train")
    assert all(line["loss/ptx"] > 0 for line in lines)
    assert all(line["loss"] > line["loss/policy"] + 0.1 * line["loss/value"] for line in lines)


def test_rloo_trains_without_a_critic(sft_run, reward_run, tmp_path):
    cfg = config(sft_run, reward_run, tmp_path, "rloo", "ppo.advantage=rloo", "ppo.samples_per_prompt=4", "ppo.rollout_batch=2",
                 "train.max_steps=8", "ppo.kl_horizon=100")
    result = run_stage("ppo", cfg)
    assert result.step == 8
    lines = read_metrics(cfg.run_dir, "train")
    assert {line["iteration"] for line in lines} == {0, 1}  # 2 prompts x 4 replies = 8 rollouts, 4 steps per iteration
    assert "loss/value" not in lines[-1] and all(line["loss"] == line["loss/policy"] for line in lines)
    first, second = lines[0], lines[-1]  # the adaptive KL coefficient moves by 8 replies' worth, not 2 prompts'
    error = max(-0.2, min(0.2, first["objective/kl"] / cfg.ppo.target_kl - 1))
    assert second["kl_coef"] == pytest.approx(first["kl_coef"] * (1 + error * 8 / cfg.ppo.kl_horizon), rel=1e-6)
    from llm.load import read

    names = read(cfg.run_dir).weights.keys()
    assert any(n.startswith("policy.") for n in names) and not any(n.startswith("critic.") for n in names)


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_group_advantages_need_groups_before_anything_loads(advantage):
    with pytest.raises(ConfigError, match=f"key 'ppo.samples_per_prompt' must be 2 or more with ppo.advantage={advantage}"):
        load_config(PPOConfig, None, [f"ppo.advantage={advantage}"])


def test_checker_reward_with_grpo_needs_no_reward_model(sft_run, tmp_path):
    # RL with verifiable rewards: the task checker scores the replies, GRPO's group is the baseline, and
    # without a reward model the evaluation reports accuracy and KL but no reward-model score
    cfg = config(sft_run, "", tmp_path, "grpo", "ppo.advantage=grpo", "ppo.samples_per_prompt=4", "ppo.rollout_batch=2",
                 "ppo.rewards=[{source: checker}]", "train.max_steps=8")
    assert run_stage("ppo", cfg).step == 8
    lines = read_metrics(cfg.run_dir, "train")
    assert all(0 <= line["reward/checker"] <= 1 and "reward/model" not in line for line in lines)
    # the score is the checker's reward less the missing-end penalty (1.0) for each reply that did not stop
    assert all(line["objective/scores"] == pytest.approx(line["reward/checker"] - (1 - line["rollout/finished"])) for line in lines)
    assert "loss/value" not in lines[-1]
    evals = read_metrics(cfg.run_dir, "eval")
    assert "exact_match" in evals[-1] and "reward" not in evals[-1]


def test_model_and_checker_rewards_are_summed_and_logged_apart(sft_run, reward_run, tmp_path):
    cfg = config(sft_run, reward_run, tmp_path, "both", "ppo.rewards=[{source: model, weight: 0.5}, {source: checker, weight: 2}]",
                 "ppo.missing_end_penalty=0", "train.max_steps=4", "train.eval_every=0", "train.eval_at_start=false")
    run_stage("ppo", cfg)
    for line in read_metrics(cfg.run_dir, "train"):
        assert line["objective/scores"] == pytest.approx(0.5 * line["reward/model"] + 2 * line["reward/checker"], rel=1e-5)


def test_a_model_reward_needs_the_reward_model(sft_run, tmp_path):
    with pytest.raises(ConfigError, match="key 'reward_model' is required: ppo.rewards has a model source"):
        run_stage("ppo", config(sft_run, "", tmp_path, "none"))


def test_ratio_guardrail_names_the_token_that_moved(sft_run, reward_run, tmp_path):
    # a bound just above 1: after one optimizer step some token of the next minibatch has moved past it
    cfg = config(sft_run, reward_run, tmp_path, "ratio", "ppo.max_ratio=1.000001", "optim.lr=3e-3", "checkpoint.save_every=0")
    with pytest.raises(TrainingError, match=r"probability ratio .* past ppo.max_ratio=1.000001 at iteration 1, minibatch 2 of \d+: "
                                            r"token '.*' went from probability .* to .* \(advantage -?\d"):
        run_stage("ppo", cfg)


def test_edge_of_competence_keeps_the_prompts_answered_right_sometimes(monkeypatch):
    from llm.config import PPOSettings
    from llm.data.tasks import Task
    from llm.eval import tasks as eval_tasks
    from llm.eval.tasks import Reply
    from llm.stages import ppo

    tasks = [Task("first_word", f"Give the first word of: w{i} x", f"w{i}") for i in range(4)]
    right_of = {0: 0, 1: 2, 2: 3, 3: 1}  # of 3 replies each: never, sometimes, always, sometimes

    def fake_replies(model, tok, prompts, max_new_tokens, temperature, top_k, seed):
        out = []
        for n, prompt in enumerate(prompts):
            i = int(prompt.split("w")[-1].split()[0])
            out.append(Reply(f"w{i}" if n % 3 < right_of[i] else "nope"))
        return out

    monkeypatch.setattr(eval_tasks, "generate_replies", fake_replies)
    settings = PPOSettings(edge_candidates=4, samples_per_prompt=3, advantage="grpo")
    prompts, kept, stats = ppo.edge_of_competence(None, None, [[i] for i in range(4)], tasks, settings, seed=0)
    assert prompts == [[1], [3]] and kept == [tasks[1], tasks[3]]
    assert stats == {"candidates": 4, "kept": 2, "always": 1, "never": 1, "pass@1": pytest.approx(6 / 12)}
    monkeypatch.setattr(eval_tasks, "generate_replies", lambda *a, **k: [Reply("nope")] * 12)
    with pytest.raises(ConfigError, match="edge_candidates"):
        ppo.edge_of_competence(None, None, [[i] for i in range(4)], tasks, settings, seed=0)
