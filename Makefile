# Developer entry points. `make demo` and `make test` work on a fresh Debian machine.
BIN := .venv/bin
SERVICES := bash deploy/local/services.sh
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install demo test test-unit lint format typecheck bench bench-load bench-gpu profile lock services-start services-stop

install:
	bash deploy/local/install.sh

demo: install
	$(BIN)/guardstream demo

# Unit, model and integration tests against the real Kafka and Redis, which it starts and stops.
test: install
	$(SERVICES) start
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; $(SERVICES) stop; exit $$status

test-unit: install
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

# The per-prompt cost of each stage of the worker's code, the worker against its ceilings
# (passthrough, stand-in model, cache hits, the model), then short and long prompts' latency at
# half of saturation: loadtest/results/bench-*.json.
bench: install
	$(SERVICES) start
	$(BIN)/python -m loadtest.bench_stages
	$(BIN)/python -m loadtest.bench_worker $(BENCH_ARGS)
	$(BIN)/python -m loadtest.bench_load --latency-only --out loadtest/results/bench-latency.json

bench-load: install
	$(SERVICES) start
	$(BIN)/python -m loadtest.bench_load $(BENCH_ARGS)

# On a CUDA machine: the model alone and one worker end to end; without CUDA: one line, exit 3.
bench-gpu: install
	@$(BIN)/python -m loadtest.bench_gpu --preflight $(BENCH_ARGS)
	$(SERVICES) start
	$(BIN)/python -m loadtest.bench_gpu $(BENCH_ARGS)

# py-spy flame graph and top-N table of the worker's hot path (stand-in model) into loadtest/results/.
profile: install
	$(SERVICES) start
	$(BIN)/python -m pip install -q py-spy
	$(BIN)/python -m loadtest.profile_worker $(BENCH_ARGS)

lock:
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml requirements/encoder.in --overrides requirements/overrides.txt \
	  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements/worker.lock
	$(BIN)/uv pip compile pyproject.toml requirements/encoder.in requirements/generator.in \
	  --extra dev --extra train --extra synth -c requirements/worker.lock \
	  --overrides requirements/overrides.txt --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 -o requirements/dev.lock

services-start:
	$(SERVICES) start

services-stop:
	$(SERVICES) stop
