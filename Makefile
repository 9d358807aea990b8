# Two commands do all the set-up on a fresh machine with Python 3 and make:
#   make demo   runs a batch of sample TIFFs through the whole local stack
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv test demo up lint bench bench-worker bench-orchestrator clean

$(STAMP): requirements.txt requirements-dev.txt worker/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

demo: venv
	$(VENV)/bin/arke-preprocess demo

up: venv
	$(VENV)/bin/arke-preprocess local up

bench-worker: venv
	$(PY) -m bench.worker_vs_sharp

bench-orchestrator: venv
	$(PY) -m bench.orchestrator

bench: bench-orchestrator bench-worker

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
