# Everything runs in a local virtualenv that the first target creates.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench bench-instructions soak clean system-deps

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build of 2.13.0 (anything else pulls a CUDA build of several GB).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,demo]'
	touch $@

demo: $(INSTALLED)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/hayscope demo

# Debian's prometheus: the real Prometheus server and promtool the collector and integration tests run;
# Debian's chromium: the headless browser the HTML report test opens the report in.
system-deps:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    prometheus chromium; fi

test: system-deps $(INSTALLED)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python benchmarks/bench_loop_monitor.py
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/bench_faults.py
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/gc_pressure.py
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/bench_overhead.py

# CPU instructions per component execution under valgrind's callgrind: overhead ratios that the
# machine's load cannot move (~15 minutes; --parts: what each part costs, ~8 minutes more).
bench-instructions: $(INSTALLED)
	@command -v valgrind >/dev/null 2>&1 || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/instructions.py
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/instructions.py --parts

# 100,000 runs at concurrency 200, every span exported: RSS, series, open spans, gauges (~6 min).
soak: $(INSTALLED)
	HAYSTACK_TELEMETRY_ENABLED=False $(BIN)/python benchmarks/bench_soak.py

clean:
	rm -rf $(VENV) build *.egg-info sdk/*.egg-info
