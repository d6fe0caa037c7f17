# clearlake: two commands for a newcomer — `make demo` and `make test`.
# Each sets up what it needs: a virtual environment with the packages, and the
# lakeFS build (cached under ~/.cache/clearlake, so only the first time is slow).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CL     := $(VENV)/bin/clearlake
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-reliability lint bench down status clean

# Bytecode is compiled at install, for the packages and clearlake's own sources: every
# command, flow run and worker otherwise compiles what it imports from source each time it
# starts wherever PYTHONDONTWRITEBYTECODE is set (and uv does not compile by default).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e ".[dev]"
	$(PY) -m compileall -q clearlake flows blocks
	touch $@

## setup: virtual environment + packages + lakeFS build (cached)
setup: $(VENV)/.installed
	$(CL) stack install

## demo: the main job end to end on the embedded default stack (leaves it running)
demo: setup
	$(CL) demo

## test: the whole suite, end-to-end tests included (starts its own servers), then the
## reliability suite on a stack of its own (its faults kill and restart services)
test: setup
	$(PY) -m pytest --ignore=tests/reliability $(PYTEST_ARGS)
	$(PY) -m pytest tests/reliability $(PYTEST_ARGS)

## test-reliability: load, faults, hostile input and the secrets sweep (tests/reliability)
test-reliability: setup
	$(PY) -m pytest tests/reliability $(PYTEST_ARGS)

## test-fast: the server-free tier: everything but the slow tests (which need the stack);
## --server-free makes a test that asks for the stack fail instead of starting it
test-fast: setup
	$(PY) -m pytest -m "not slow" --server-free $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check clearlake blocks flows tests bench

## bench: the benchmarks, each as a ratio against a baseline from the same run
bench: setup
	$(PY) -m bench.score

down: $(VENV)/.installed
	$(CL) stack down

status: $(VENV)/.installed
	$(CL) stack status

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
