# Every target builds .venv from nothing when it is missing (Python 3.11+, pip).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
BANK_SERVICE_DB ?= bank.db
WORKERS ?= 1

.PHONY: install test lint format check demo bench bench-postgres soak example docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,examples,docs,postgres,charts,otel,uvloop]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python .ci/check_links.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test

demo: $(STAMP)
	$(BIN)/python -m demo

# The bench extra brings the peer library bench.compare measures against (only here).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.store_append
	$(BIN)/python -m bench.actors
	$(BIN)/python -m bench.projections
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.loadtest --runs 3 --concurrency 1 100 1000
	$(BIN)/python -m bench.cold_actors --runs 3
	$(BIN)/python -m bench.settle --runs 3

# The PostgreSQL store's benchmarks, on the server POSTGRES_URL names (each run in a
# schema of its own, dropped after): make bench-postgres POSTGRES_URL=postgresql://...
POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
bench-postgres: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.store_append --db $(POSTGRES_URL)
	$(BIN)/python -m bench.pg_batch --url $(POSTGRES_URL)
	$(BIN)/python -m bench.compare --db $(POSTGRES_URL)

# The reliability suite at full sizes (tens of minutes): figures to reports/soak.jsonl,
# summarised by `python -m tests.reliability.summary reports/soak.jsonl`.
soak: $(STAMP)
	mkdir -p reports
	ES_SOAK=1 ES_REPORT=reports/soak.jsonl $(BIN)/python -m pytest -q tests/reliability \
		--timeout 7200 -o faulthandler_timeout=7100

# The bank service example on 127.0.0.1:$(PORT) (make example PORT=9000 BANK_SERVICE_DB=x.db);
# BANK_SERVICE_DB may be a postgresql:// URL. WORKERS=2 serves it from 2 uvicorn worker
# processes sharing that store.
example: $(STAMP)
	$(BIN)/python -m examples.bank_service --host 127.0.0.1 --port $(PORT) \
		--database '$(BANK_SERVICE_DB)' --workers $(WORKERS)

# The API reference, generated from the docstrings into site/.
docs: $(STAMP)
	rm -rf site
	$(BIN)/pdoc --docformat google --output-directory site \
		store store.telemetry bus actors actors.testing readmodels readmodels.testing demo demo.bank \
		demo.shop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .hypothesis site
