# The commands a user types. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo pretrain sft sample chat bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: on the CPU-only machines this project targets it comes from the local
	@# wheel in seconds, where a bare 'torch' would pull a multi-GB CUDA build
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,hf,api]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest

demo: install
	$(PY) -m llm pipeline --config configs/pipeline/tiny.yaml

pretrain: install
	$(PY) -m llm pretrain --config configs/pretrain/tiny.yaml

sft: install
	$(PY) -m llm sft --config configs/sft/tiny.yaml

sample: install
	$(PY) -m llm sample --checkpoint runs/pretrain-tiny --prompt "The" --max-new-tokens 200 --temperature 0.8 --top-k 50

chat: install
	$(PY) -m llm chat --checkpoint runs/sft-tiny

bench: install
	$(PY) scripts/bench.py --out bench/results.json

# every GPU check in about 9 minutes, with the Python that has CUDA's torch (scripts/gpu_check.sh)
gpu-check:
	PYTHON=$(PYTHON) bash scripts/gpu_check.sh

clean:
	rm -rf runs .cache
