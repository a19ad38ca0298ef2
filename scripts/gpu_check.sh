#!/usr/bin/env bash
# Every GPU check in one command, sized for a short loan of one GPU (its parts' limits add up to 9m40s,
# inside the 10 minutes one command may run): the CUDA-path tests, then the benchmark cases that answer
# the open GPU questions, most wanted first. Each part has its own time limit; a part cut short loses its
# JSON, but log.txt keeps every case's line as it finished.
#
#   bash scripts/gpu_check.sh              # results in bench/gpu/ (or in $OUT when it is set)
#   PYTHON=.venv/bin/python bash scripts/gpu_check.sh
#
# It needs a Python with a CUDA build of torch and the project's dependencies; the project itself runs
# from this folder without installing it.
set -u
OUT=${OUT:-bench/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG="$OUT/log.txt"

part() {  # part NAME SECONDS COMMAND...: one check, its output appended to the log
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s): $*" | tee -a "$LOG"
    local started=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - started))s" | tee -a "$LOG"
}

bench() {  # bench NAME SECONDS PATTERN...: the bench cases whose names hold a pattern, one round, into NAME.json
    local name=$1 limit=$2
    shift 2
    local only=()
    for pattern in "$@"; do only+=(--only "$pattern"); done
    part "$name" "$limit" "$PY" scripts/bench.py --repeat 1 --out "$OUT/$name.json" "${only[@]}"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt" | tee -a "$LOG"

part cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda_path.py
# where the 124M step's time goes, then its MFU with and without activation checkpointing
bench profile 100 profile/gpt2_124m/bf16_compile
bench train 150 train/gpt2_124m/bf16_compile
# the decode step: dynamic KV cache against the CUDA graph, one prompt and 64
bench sampling 90 sample/gpt2_124m_ctx512/kv_cache sample/gpt2_124m_ctx512/cuda_graph sample/tiny_ctx512/kv_cache sample/tiny_ctx512/cuda_graph
# DDP against FSDP2 on every GPU there is (one process per GPU)
bench parallel 120 parallel/gpt2_124m
