# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install run check-config clean lint bench bench-leases

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
bench: bench-leases

bench-leases: $(STAMP)
	$(BIN)/python -m bench.leases_bench

check-config: $(STAMP)
	$(BIN)/stream-worker check-config --config config/worker.yaml

lint: $(STAMP)
	$(BIN)/hadolint Dockerfile
	$(BIN)/mypy worker

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
