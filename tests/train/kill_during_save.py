"""scripts/pretrain.py, except that process 0 is SIGKILLed inside its second sharded save: after every
process has written its shards, before the whole weights, the manifest and the rename (test_sharding.py)."""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llm.cli import run_stage_script  # noqa: E402
from llm.train import sharded_checkpoint  # noqa: E402

gather = sharded_checkpoint.full_weights
calls = []


def dying_gather(model):
    calls.append(1)
    if len(calls) == 2 and os.environ.get("RANK") == "0":
        os.kill(os.getpid(), signal.SIGKILL)
    return gather(model)


sharded_checkpoint.full_weights = dying_gather
run_stage_script("pretrain", "pre-training, killed during its second save")
