# Two commands do all the set-up on a fresh machine with Python 3 and make:
#   make demo   runs a batch of sample TIFFs through the whole local stack
#   make test   runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv browser test demo up lint bench bench-worker bench-orchestrator bench-scale bench-scale-standing bench-fleet-sim bench-stack-load bench-capacity bench-moto mutation clean

$(STAMP): requirements.txt requirements-dev.txt worker/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# The console's browser test drives Debian's chromium through its chromedriver (nothing is
# downloaded at test time); installed here when missing (CI runs as root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; }

test: venv browser
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

.PHONY: bench-emulator-pool
bench-emulator-pool: venv
	$(PY) -m bench.fly_emulator_pool

# Not part of `bench`: each run starts the whole local stack; the 10,000-task pool run takes
# minutes (BENCH_SCALE_ARGS='--only-small', '--n 20 --mode single', '--env KEY=VALUE').
bench-scale: venv
	$(PY) -m bench.scale $(BENCH_SCALE_ARGS)

bench-scale-standing: venv
	$(PY) -m bench.scale_standing $(BENCH_SCALE_ARGS)

# The virtual-time fleet simulation (issue 18): the real app and store on in-process moto,
# Fly and the machines as seeded events (BENCH_FLEET_SIM_ARGS='--n 100000', '--standing 0',
# '--safety-seeds 20 --n 200', '--profile stack --compare bench/results/scale-....json').
bench-fleet-sim: venv
	$(PY) -m bench.fleet_sim $(BENCH_FLEET_SIM_ARGS)

# The stack's API under a 230-machine pool's request rate (200 req/s from 50 threads).
bench-stack-load: venv
	$(PY) -m bench.stack_load $(BENCH_STACK_LOAD_ARGS)

bench-capacity: venv
	$(PY) -m bench.capacity

# The stack's moto under a pool's DynamoDB request mix: CPU per request, against stock moto.
bench-moto: venv
	$(PY) -m bench.moto_server $(BENCH_MOTO_ARGS)

bench: bench-orchestrator bench-worker

# Not part of test or CI: break each guard of tools/mutations.toml, run the fast tests
# (e.g. MUTATION_ARGS='--only failed-fraction-boundary' or '--list').
mutation: venv
	$(PY) tools/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
