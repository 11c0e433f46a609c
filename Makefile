# Two entry points do all the set-up themselves: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch: a plain range in pyproject.toml keeps a user's own (GPU) torch; on a fresh venv we first
# take one known CPU-capable release so pip does not pick a multi-GB CUDA build by itself.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_PIN)"
	$(VPY) -m pip install -q -e ".[encoders,dev]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VPY) examples/quickstart.py

test: lint
	HF_HUB_OFFLINE=1 $(VPY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(VPY) -m pytest -q -m slow

# ruff (lint + complexity + format check) and mypy (the packages listed under [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(VPY) -m ruff check mvstore tests benchmarks examples
	$(VPY) -m ruff format --check mvstore tests benchmarks examples
	$(VPY) -m mypy

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(VPY) benchmarks/scifact.py --json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mvstore-demo
