"""llm rank (llm/commands/rank.py): a person ranks in the terminal, or a rater program fills the file; the reward stage learns it."""

import json
import subprocess

import pytest

from conftest_helpers import PYTHON, REPO, read_metrics, reward_overrides
from llm.data.rankings import load_rankings

FLAGS = ["--k", "3", "--max-new-tokens", "8", "--kinds", "first_word,last_word", "--device", "cpu"]


def rank(sft_run, path, *extra, stdin=""):
    done = subprocess.run([PYTHON, "scripts/rank.py", "--checkpoint", str(sft_run), "--rank", str(path), *FLAGS, *extra],
                          cwd=REPO, input=stdin, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_parse_order_reads_ties_and_names_what_is_wrong():
    from llm.commands import rank as script

    assert script.parse_order("2=1 4 3", 4) == [[1, 0], [3], [2]]
    for bad, reason in (("1 2 3", "exactly once"), ("1 1 2 3", "exactly once"), ("1 2 x 3", "not an order")):
        with pytest.raises(ValueError, match=reason):
            script.parse_order(bad, 4)


def test_a_person_ranks_skips_and_undoes_in_the_terminal_and_a_rerun_continues(sft_run, tmp_path):
    path = tmp_path / "r.jsonl"
    # rank, a bad line (asked again), skip, undo the skip, all bad, quit
    done = rank(sft_run, path, stdin="2 1 3\n1 1 2\ns\nu\nb\nq\n")
    assert "exactly once" in done.stdout and "(undone)" in done.stdout
    entries = load_rankings(path)
    assert [(e.status, e.ranking) for e in entries] == [("ranked", [[1], [0], [2]]), ("all_bad", [])]
    assert len(path.read_text().splitlines()) == 4  # ranked, skipped, the undo, all bad: nothing rewritten
    again = rank(sft_run, path, stdin="3=2 1\n")  # a rerun: a new prompt, then end of input
    prompts = [e.prompt[0]["content"] for e in load_rankings(path)]
    assert len(prompts) == 3 and len(set(prompts)) == 3 and prompts[-1] in again.stdout


def test_a_rater_fills_the_file_and_the_reward_stage_learns_its_rankings(sft_run, tmp_path):
    from llm.config import RewardConfig, load_config
    from llm.stages.launch import run_stage

    path = tmp_path / "r.jsonl"
    rank(sft_run, path, "--rater", "plain", "--target", "120")
    entries = load_rankings(path)
    assert len(entries) == 120 and {e.rater for e in entries} == {"plain"}
    overrides = [o for o in reward_overrides(sft_run, tmp_path) if not o.startswith("data.")]
    cfg = load_config(RewardConfig, REPO / "configs/reward/tiny_rankings.yaml",
                      overrides + [f"data.sources=[rankings:{path}]", "data.val_fraction=0.25", "train.max_steps=30"])
    run_stage("reward", cfg)
    log = json.loads((cfg.run_dir / "data.json").read_text())
    (source,) = log["sources"]
    # every two replies in different groups make a pair (same text means same group, so none is dropped)
    pairs = sum((3**2 - sum(len(g) ** 2 for g in e.ranking)) // 2 for e in entries)
    assert source["path"] == f"rankings:{path}" and source["train"] + source["val"] == pairs > 0
    evals = read_metrics(cfg.run_dir, "eval")
    assert "val_top1_best" in evals[-1] and evals[-1]["val_loss"] < evals[0]["val_loss"]


def test_ctrl_c_says_the_answers_are_kept_not_a_checkpoint_line(sft_run, tmp_path):
    import signal

    # Ctrl-C as a terminal delivers it, also when the suite itself runs in the background, where the shell
    # starts it with SIGINT ignored and Python then leaves it ignored in every child
    proc = subprocess.Popen([PYTHON, "scripts/rank.py", "--checkpoint", str(sft_run), "--rank", str(tmp_path / "r.jsonl"), *FLAGS],
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # the first prompt is on screen: the script waits for the person
        if line.startswith("  3. "):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "stopped; every answer given is in the rankings file"


def test_two_rater_programs_rank_the_same_replies_and_a_person_is_shown_them_third(sft_run, tmp_path):
    path = tmp_path / "r.jsonl"
    rank(sft_run, path, "--rater", "plain", "--target", "6", "--raters-per-prompt", "2")
    rank(sft_run, path, "--rater", "filler", "--target", "12", "--raters-per-prompt", "2")
    entries = load_rankings(path)
    by_prompt = {}
    for e in entries:
        by_prompt.setdefault(e.id, []).append(e)
    assert [[e.rater for e in pair] for pair in by_prompt.values()] == [["plain", "filler"]] * 6
    assert all(first.replies == second.replies for first, second in by_prompt.values())
    done = rank(sft_run, path, "--name", "ana", "--raters-per-prompt", "3", stdin="1 2 3\nq\n")
    ana = [e for e in load_rankings(path) if e.rater == "ana"]
    assert len(ana) == 1 and ana[0].id == entries[0].id and ana[0].replies == entries[0].replies
    assert entries[0].prompt[0]["content"] in done.stdout
