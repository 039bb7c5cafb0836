# The two set-up commands, `make demo` and `make test`: each creates .venv if it is missing and installs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# libtpu for `python -m dmvfn_jax.planning.plan` (TPU compilation on this machine), pinned to what jax[tpu]
# requires, installed where only dmvfn_jax.planning.tpu looks: as a package, every JAX process on a machine
# without TPU chips would try to start the TPU runtime and print its failure.
LIBTPU := libtpu==0.0.42.*
LIBTPU_STAMP := $(VENV)/libtpu/.installed

.PHONY: demo test test-fast bench install plan-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to the local CPU build: an unpinned torch would pull GBs of CUDA wheels.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# LPIPS parity and its shipped linear weights: lpips without its deps (they would pull a CUDA torchvision).
	$(PY) -m pip install -q --no-deps "lpips==0.1.4"
	touch $(STAMP)

install: $(STAMP)

$(LIBTPU_STAMP): | $(STAMP)
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/libtpu "$(LIBTPU)"
	touch $(LIBTPU_STAMP)

plan-deps: $(LIBTPU_STAMP)

# Train on the bundled synthetic videos on CPU, evaluate against copy-last-frame, write runs/demo/.
# Running it again resumes (or, once finished, only re-evaluates); `make clean` starts over.
demo: $(STAMP)
	$(PY) train.py --config configs/demo.py --workdir runs/demo

# Two pytest-xdist workers, one per core: XLA compiles on one core, and the suite is mostly
# compiling. --dist loadscope keeps each test file on one worker, so its module fixtures run once;
# --no-loadscope-reorder hands the files out longest first (tests/conftest.py, FILE_SECONDS) instead
# of by their number of tests, which left the few-test, long files (plans, processes) for the end.
XDIST := -n 2 --dist loadscope --no-loadscope-reorder

test: $(STAMP) $(LIBTPU_STAMP)
	$(PY) -m pytest -q $(XDIST) tests

# For development: everything but the tests marked slow (training runs, multi-device and multi-process
# programs, TPU compiles, the README's long examples). CI runs `make test`.
test-fast: $(STAMP) $(LIBTPU_STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" tests

# Speed and memory against the PyTorch oracle, same weights and device (BENCHMARKS.md); not part of CI.
bench: $(STAMP)
	$(PY) bench/run.py --out bench/results.json

clean:
	rm -rf $(VENV) runs .pytest_cache
