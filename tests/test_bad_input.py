"""Bad flags and config values end a script with one `error: ...` line and status 2, before anything loads."""

import subprocess
import time
from types import SimpleNamespace

import pytest

from conftest_helpers import PYTHON, REPO

SCRIPT_CASES = [
    (["scripts/sample.py", "--checkpoint", "{tmp}/none", "--top-p", "0"], "--top-p must be in (0, 1]; got 0.0"),
    (["scripts/sample.py", "--checkpoint", "{tmp}/none", "--temperature", "-1"], "--temperature must be at least 0; got -1.0"),
    (["scripts/sample.py", "--checkpoint", "{tmp}/none", "--num-samples", "0"], "--num-samples must be at least 1; got 0"),
    (["scripts/chat.py", "--checkpoint", "{tmp}/none", "--top-k", "-1"], "--top-k must be at least 0; got -1"),
    (["scripts/score.py", "--checkpoint", "{tmp}/none", "--prompt", "p", "--response", "r", "--device", "gpu"],
     "--device must be auto, cpu"),
    (["scripts/pretrain.py", "--config", "configs/pretrain/tiny.yaml", "out_dir={tmp}", "tokenizer.vocab_size=5"],
     "configs/pretrain/tiny.yaml: key 'tokenizer.vocab_size' must be at least 263 (256 byte tokens + 7 special tokens); got 5"),
    (["scripts/ppo.py", "--config", "configs/ppo/tiny.yaml", "out_dir={tmp}", "ppo.kl_estimator=k9"],
     "configs/ppo/tiny.yaml: key 'ppo.kl_estimator' must be one of k1, k3; got 'k9'"),
]


@pytest.mark.parametrize("args, expected", SCRIPT_CASES, ids=[" ".join(a[i] for i in (0, -2, -1)) for a, _ in SCRIPT_CASES])
def test_a_bad_value_is_one_error_line_before_anything_loads(args, expected, tmp_path):
    started = time.monotonic()
    done = subprocess.run([PYTHON, *(a.format(tmp=tmp_path) for a in args)], cwd=REPO, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), done.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, no checkpoint read: the value failed first
    assert elapsed < 30, f"took {elapsed:.1f}s: something loaded before the check"


def test_chat_temperature_command_refuses_a_bad_value_and_goes_on(capsys):
    from llm.commands import chat

    session = SimpleNamespace(temperature=0.7)
    assert chat.command(session, "/temperature -1") is True
    assert session.temperature == 0.7
    assert "key 'temperature' must be at least 0; got -1.0; temperature stays 0.7" in capsys.readouterr().out
    chat.command(session, "/temperature nan")
    assert session.temperature == 0.7
    chat.command(session, "/temperature 0")  # greedy
    assert session.temperature == 0.0
