"""Benchmark plumbing on micro shapes: figures are measured through the real loop and land in JSON."""

import json

import pytest

from benchmarks import measure as bench
from benchmarks import profile, suite

MICRO = dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32)


def test_train_throughput_measures_after_warm_up():
    result = bench.train_throughput(MICRO, batch_size=4, steps=40, overrides=["train.dtype=float32"])
    assert len(result["tokens_per_s_windows"]) == 2  # 4 logging windows of 10 steps, the first 2 skipped
    assert result["tokens_per_s"] > 0 and result["params"] > 0
    assert abs(result["ms_per_step"] - 1000 * 4 * 16 / result["tokens_per_s"]) < 1e-6
    json.dumps(result)


@pytest.mark.parametrize("decode", ["dynamic", "static", "none"])
def test_sampling_produces_every_token_of_every_row(decode):
    for batch in (1, 3):  # 40 new tokens in a context of 32: past the context too
        result = bench.sampling_throughput({**MICRO, "block_size": 32}, new_tokens=40, decode=decode, batch=batch, device="cpu")
        assert result["new_tokens"] == 40 * batch and result["batch"] == batch and result["tokens_per_s"] > 0


def test_median_round_and_derived_ratios():
    runs = [{"tokens_per_s": 30.0}, {"tokens_per_s": 10.0}, {"tokens_per_s": 20.0}]
    chosen = suite.median_run(runs)
    assert chosen["tokens_per_s"] == 20.0 and chosen["tokens_per_s_rounds"] == [30.0, 10.0, 20.0]
    assert suite.median_run([{"error": "boom"}, {"tokens_per_s": 5.0}])["tokens_per_s"] == 5.0
    results = {"nanogpt_cpu_reference_tokens_per_s": 100.0, "cases": {
        "train/nanogpt_cpu_shape/fp32": {"tokens_per_s": 110.0},
        "train/nanogpt_cpu_shape/compile": {"tokens_per_s": 130.0},
        "sample/tiny_ctx512/kv_cache": {"tokens_per_s": 50.0},
        "sample/tiny_ctx512/no_cache": {"tokens_per_s": 10.0},
        "sample/tiny_ctx512/static": {"tokens_per_s": 40.0},
    }}
    suite.add_derived(results)
    derived = results["derived"]
    assert derived["nanogpt_shape_speedup_default"] == 1.1 and derived["nanogpt_shape_speedup_best"] == 1.3
    assert derived["kv_cache_speedup"] == 5.0 and derived["static_decode_speedup"] == 0.8
    assert "cuda_graph_speedup" not in derived  # no figure for a case this device did not run


@pytest.mark.slow
def test_parallel_cases_run_two_processes_and_fsdp_holds_half_the_tensors():
    shape = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=128)  # the matrices outweigh the rest
    ddp, fsdp = (bench.parallel_throughput(shape, 2, 6, ["train.dtype=float32", f"train.parallel={p}"]) for p in ("ddp", "fsdp"))
    for result in (ddp, fsdp):
        assert result["processes"] == 2 and result["tokens_per_s"] > 0, result
    # weights and AdamW's two moments, whole on each process under DDP and half under FSDP (the rest is
    # the process's own: the data, the RoPE tables)
    params_mb = ddp["params"] * 4 / 2**20
    assert ddp["memory_mb_per_process"] - fsdp["memory_mb_per_process"] > 0.45 * 3 * params_mb
    assert " tokens/s over 2 processes, " in suite.summary(fsdp)


def test_a_profile_accounts_for_the_step_and_sorts_its_time_by_kind():
    result = profile.profile_train(MICRO, batch_size=4, active_steps=3, overrides=["train.dtype=float32"], warm_steps=2)
    kinds = result["ms_per_step_by_kind"]
    assert result["profiled_steps"] == 3 and result["step_ms"] > 0
    assert {"matmul", "optimizer", "loss"} <= set(kinds) and all(ms >= 0 for ms in kinds.values())
    # on the CPU the kinds are every operator's own time and the Python between them: together, the step
    assert abs(sum(kinds.values()) - result["step_ms"]) < 0.1 * result["step_ms"]
    assert result["costliest"][0]["ms_per_step"] == max(c["ms_per_step"] for c in result["costliest"])
    assert "ms a step" in suite.summary(result)
    json.dumps(result)


@pytest.mark.parametrize("name, kind", [("void gemmSN_TN_kernel<float>", "matmul"), ("aten::addmm", "matmul"),
                                        ("flash_fwd_kernel", "attention"), ("multi_tensor_apply_kernel", "optimizer"),
                                        ("triton_red_fused__log_softmax_0", "loss"), ("Memcpy HtoD (Pageable -> Device)", "copy"),
                                        ("triton_poi_fused_add_mul_0", "elementwise and other")])
def test_kernels_and_operators_are_sorted_by_what_they_do(name, kind):
    assert profile.category(name) == kind
