# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install run check-config clean lint lock lock-upgrade bench bench-leases bench-pipeline bench-pipeline-tracing bench-record-path bench-e2e bench-lag bench-idle bench-hot-shard bench-child-start bench-takeover

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stream-worker demo

test: $(STAMP)
	$(BIN)/pytest -q

# Benchmarks write bench/results.json (see bench/README.md).
bench: bench-leases bench-pipeline bench-record-path bench-e2e bench-lag bench-idle bench-hot-shard bench-child-start bench-takeover

bench-leases: $(STAMP)
	$(BIN)/python -m bench.leases_bench

bench-pipeline: $(STAMP)
	$(BIN)/python -m bench.pipeline_bench

# The same, plus a worker with tracing on at 100 % sampling in every round (bench/README.md).
bench-pipeline-tracing: $(STAMP)
	$(BIN)/python -m bench.pipeline_bench --tracing

# CPU a record costs from submit to a no-op handler, in process (bench/README.md).
bench-record-path: $(STAMP)
	$(BIN)/python -m bench.record_path_bench

bench-e2e: $(STAMP)
	$(BIN)/python -m bench.e2e_bench

bench-lag: $(STAMP)
	$(BIN)/python -m bench.lag_bench

bench-idle: $(STAMP)
	$(BIN)/python -m bench.idle_bench

bench-hot-shard: $(STAMP)
	$(BIN)/python -m bench.hot_shard_bench

bench-child-start: $(STAMP)
	$(BIN)/python -m bench.child_start_bench

bench-takeover: $(STAMP)
	$(BIN)/python -m bench.takeover_bench

# requirements.lock: every runtime dependency (plus the otel extra, when pyproject.toml has
# one) pinned with its hashes, for the Docker image (pip --require-hashes). `make lock` after
# a dependency change in pyproject.toml keeps every pin that still fits; `make lock-upgrade`
# moves every pin to the newest allowed version. tests/deploy/test_lock.py re-runs `make lock`.
LOCK_FILE   ?= requirements.lock
LOCK_EXTRAS := $(shell grep -qE '^otel *=' pyproject.toml && echo --extra otel)
LOCK_CMD     = $(BIN)/uv pip compile pyproject.toml $(LOCK_EXTRAS) --generate-hashes --quiet \
               --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
               --custom-compile-command "make lock" --output-file $(LOCK_FILE)

# requirements-build.lock: what builds the project's wheel in the image ([build-system]
# requires), pinned with hashes the same way.
BUILD_LOCK_FILE ?= requirements-build.lock
BUILD_LOCK_CMD   = $(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
                   | $(BIN)/uv pip compile - --generate-hashes --quiet \
                   --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
                   --custom-compile-command "make lock" --output-file $(BUILD_LOCK_FILE)

lock: $(STAMP)
	$(LOCK_CMD)
	$(BUILD_LOCK_CMD)

lock-upgrade: $(STAMP)
	$(LOCK_CMD) --upgrade
	$(BUILD_LOCK_CMD) --upgrade

check-config: $(STAMP)
	$(BIN)/stream-worker check-config --config config/worker.yaml

lint: $(STAMP)
	$(BIN)/hadolint Dockerfile
	$(BIN)/mypy worker

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Chaos runs of the seed chain (tests/chaos/): workers killed and restarted, AWS faults
# injected by a proxy. `chaos` is the long form (exit 0 = pass, with a summary table);
# override e.g. `make chaos CHAOS_ORDERS=1000 CHAOS_DURATION=180 CHAOS_SEED=3`.
CHAOS_ORDERS   ?= 3000
CHAOS_DURATION ?= 300
CHAOS_SEED     ?= 1

.PHONY: chaos chaos-short

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.controller --orders $(CHAOS_ORDERS) --duration $(CHAOS_DURATION) --seed $(CHAOS_SEED)

chaos-short: $(STAMP)
	$(BIN)/pytest -q tests/chaos
