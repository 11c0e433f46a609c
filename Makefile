# Two entry points do all the set-up themselves: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# torch: a plain range in pyproject.toml keeps a user's own (GPU) torch; on a fresh venv we first
# take one known CPU-capable release so pip does not pick a multi-GB CUDA build by itself.
TORCH_PIN ?= torch==2.13.0
# PyLate 1.2 (the pylate extra's range in pyproject.toml) pins transformers 4.48.2 and sentence-transformers
# 4.0.2, older than what `pip install mvstore[encoders]` gives, so it gets a venv of its own: the tests that
# check the importer against a real PyLate index run PyLate there (tests/pylate_side.py) and read its output
# here. ninja: torch JIT-builds PyLate's C++ extensions with it. CPU only, like the main venv.
PYLATE_VENV ?= .venv-pylate
PYLATE_REQ  ?= pylate>=1.2,<1.3
PYLATE_STAMP := $(PYLATE_VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_PIN)"
	$(VPY) -m pip install -q -e ".[encoders,dev]"
	touch $(STAMP)

$(PYLATE_STAMP): pyproject.toml
	$(PY) -m venv $(PYLATE_VENV)
	$(PYLATE_VENV)/bin/python -m pip install -q --upgrade pip
	$(PYLATE_VENV)/bin/python -m pip install -q "$(TORCH_PIN)"
	$(PYLATE_VENV)/bin/python -m pip install -q "$(PYLATE_REQ)" ninja
	touch $(PYLATE_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VPY) examples/quickstart.py

test: lint $(PYLATE_STAMP)
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
	rm -rf $(VENV) $(PYLATE_VENV) .pytest_cache .ruff_cache .mvstore-demo
