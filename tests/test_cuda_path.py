"""The CUDA path: flash attention through SDPA, bf16 autocast, fused AdamW, torch.compile, NCCL.

Skipped without a GPU (CI has none); run on a lent GPU with `pytest tests/test_cuda_path.py`.
"""

import subprocess

import pytest
import torch

from conftest_helpers import PYTHON, REPO, TORCHRUN, read_metrics, tiny_overrides
from llm.config import ModelConfig, OptimConfig
from llm.device import peak_flops, pick_precision
from llm.generate import SamplingParams, generate
from llm.model import GPT
from llm.train.optim import build_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHAPE = dict(vocab_size=512, block_size=128, n_layer=2, n_head=4, n_embd=128)


def lm_loss(model, idx) -> torch.Tensor:
    logits = model(idx[:, :-1])
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), idx[:, 1:].flatten())


def cuda_model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**SHAPE, **kw})).cuda()


def test_auto_precision_is_bf16_and_the_peak_is_known():
    device = torch.device("cuda")
    assert pick_precision(device).dtype == torch.bfloat16
    name = torch.cuda.get_device_name()
    if any(chip in name for chip in ("H100", "H200", "A100")):
        assert peak_flops(device, torch.bfloat16) > 1e14


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_training_attention_runs_on_the_flash_kernel(position):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = cuda_model(position=position)
    idx = torch.randint(0, 512, (4, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # raises if any attention call cannot use it
            flash = lm_loss(model, idx)
        with sdpa_kernel(SDPBackend.MATH):
            math = lm_loss(model, idx)
    flash.backward()
    assert abs(flash.item() - math.item()) < 2e-2
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_fused_adamw_is_chosen_on_cuda():
    optimizer = build_optimizer(cuda_model(), OptimConfig(), torch.device("cuda"))
    assert optimizer.defaults["fused"] is True


def test_compiled_model_matches_eager():
    model = cuda_model()
    idx = torch.randint(0, 512, (4, 128), device="cuda")
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager_loss = lm_loss(model, idx).item()
        compiled_loss = lm_loss(compiled, idx).item()
    assert abs(eager_loss - compiled_loss) < 2e-2


def test_kv_cache_greedy_equals_recomputation_on_cuda():
    model = cuda_model().eval()
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]  # left padding exercises the masked attention path
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    cached = generate(model, prompts, params, pad_id=0, use_cache=True)
    plain = generate(model, prompts, params, pad_id=0, use_cache=False)
    assert cached.tokens == plain.tokens


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("block_size", [128, 32], ids=["within-context", "overflows"])
def test_cuda_graph_decode_greedy_equals_the_eager_paths(autocast, block_size):
    """The decode step recorded as a CUDA graph replays the very kernels of the eager static step (equal
    tokens under bf16 too), and in fp32 gives today's greedy tokens, past the context and with left padding."""
    model = cuda_model(block_size=block_size).eval()
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
    params = SamplingParams(max_new_tokens=60, temperature=0.0)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        graph = generate(model, prompts, params, pad_id=0, decode="graph")
        assert graph.tokens == generate(model, prompts, params, pad_id=0, decode="static").tokens
        if not autocast:
            assert graph.tokens == generate(model, prompts, params, pad_id=0, decode="dynamic").tokens
            assert graph.tokens == generate(model, prompts, params, pad_id=0, use_cache=False).tokens
    assert all(len(t) == 60 for t in graph.tokens)


def run_pretrain(tmp_path, corpus_file, extra: list[str], launcher: list[str]) -> subprocess.CompletedProcess:
    args = tiny_overrides(corpus_file, tmp_path / "cache", tmp_path / "runs", "cuda") + ["train.max_steps=60", *extra]
    command = [*launcher, "scripts/pretrain.py", "--config", "configs/pretrain/tiny.yaml", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("extra", [[], ["train.compile=true"]], ids=["eager", "compile"])
def test_pretraining_on_cuda_lowers_the_loss(tmp_path, corpus_file, extra):
    done = run_pretrain(tmp_path, corpus_file, ["train.device=cuda", *extra], [PYTHON])
    assert done.returncode == 0, done.stdout + done.stderr
    losses = [x["loss"] for x in read_metrics(tmp_path / "runs" / "cuda", "train")]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5


@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="DDP over NCCL needs one GPU per rank"))])
def test_torchrun_trains_on_cuda(tmp_path, corpus_file, nproc):
    launcher = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}"]
    done = run_pretrain(tmp_path, corpus_file, [], launcher)
    assert done.returncode == 0, done.stdout + done.stderr
    losses = [x["loss"] for x in read_metrics(tmp_path / "runs" / "cuda", "train")]
    assert losses[-1] < losses[0]
