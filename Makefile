# Developer entry points. `make demo` and `make test` work on a fresh Debian machine.
BIN := .venv/bin
SERVICES := bash deploy/local/services.sh
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install demo test test-unit lint format typecheck bench bench-load lock services-start services-stop

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

bench: install
	$(SERVICES) start
	$(BIN)/python -m loadtest.bench_worker $(BENCH_ARGS)

bench-load: install
	$(SERVICES) start
	$(BIN)/python -m loadtest.bench_load

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
