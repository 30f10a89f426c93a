# Everything runs in a local virtualenv that the first target creates.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(INSTALLED)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/hayscope demo

test: $(INSTALLED)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python -m pytest

bench: $(INSTALLED)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/bench_overhead.py

clean:
	rm -rf $(VENV) build *.egg-info sdk/*.egg-info
