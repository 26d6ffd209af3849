# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-train test lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision pinned to the builds that install from this machine kind's local disk
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev,serve]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spm-gen demo --output outputs/demo

# the full run: trains the demo's four models (4,000 steps each, about 75 minutes on 2 CPU cores), then the demo on them
demo-train: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/train_demo_models.sh runs/demo_models
	$(BIN)/spm-gen demo --models runs/demo_models --output outputs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/memory_bank.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache .hypothesis
