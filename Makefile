# Every target sets itself up on a fresh machine: a venv in .venv with the package and its extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint format bench-throttle bench-cache load load-plots reliability-docs mutate chaos clean docs matrix

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[sample,test,load,speed,bench,release,mutate]"
	touch $(STAMP)

install: $(STAMP)

## Run the sample e-commerce API on http://127.0.0.1:8000 (real redis-server if present, else an embedded one).
demo: $(STAMP)
	$(BIN)/python sample_api/run_demo.py

## Lint, then the whole test suite (fakeredis, a real redis-server and a real 3-master cluster).
test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Mutation testing (docs/testing.md): every Lua mutant (tests/lua_mutants.py) on fakeredis and a
## real redis-server, then mutmut over ratelimit.py, throttling.py, keys.py, rates.py, caching.py,
## cache_entries.py, generations.py and invalidation/ (rules.py, delivery.py, outbox.py); then
## tests/mutation_report.py prints each module's score and fails on a survivor no list classifies.
mutate: $(STAMP)
	$(BIN)/python -m tests.lua_mutants --backends real; lua=$$?; \
	$(BIN)/mutmut run --max-children 2; \
	$(BIN)/python -m tests.mutation_report; report=$$?; \
	[ $$lua -eq 0 ] && [ $$report -eq 0 ]

## Throttle benchmark against DRF's throttle and `limits` (pinned to CPU 0, then unpinned);
## prints each ratio against its target and rewrites the throttle section of docs/benchmarks.md.
bench-throttle: $(STAMP)
	$(BIN)/python benchmarks/throttle_bench.py --markdown docs/benchmarks.md

## Locust load test of the sample API on loopback (redis-server, gunicorn, Locust; all stopped after).
## USERS=20 SPAWN_RATE=5 DURATION=60 (s) CLUSTER=1 (3-master cluster) MODE=toolkit|baseline|compare
## SWEEP=10,25,50 (one run per user count; then `make load-plots`). Reports: loadtests/results/.
## MODE=saturate MARKDOWN=docs/benchmarks.md also rewrites the saturation block of that file.
load: $(STAMP)
	USERS=$(USERS) SPAWN_RATE=$(SPAWN_RATE) DURATION=$(DURATION) CLUSTER=$(CLUSTER) \
	MODE=$(MODE) SWEEP=$(SWEEP) MARKDOWN=$(MARKDOWN) $(BIN)/python loadtests/run.py

## PNG plots from loadtests/results/sweep.json into docs/img/.
load-plots: $(STAMP)
	$(BIN)/python loadtests/plot.py

## Run the outage tests, record their measurements, and rewrite the measured block of docs/reliability.md.
reliability-docs: $(STAMP)
	rm -f docs/data/reliability.json
	DRT_MEASUREMENTS=docs/data/reliability.json DRT_STALE_RUNS=10 $(BIN)/python -m pytest -q -p no:randomly tests/test_outage_under_load.py
	$(BIN)/python tests/render_reliability.py

## Response-caching benchmark against drf-extensions and cache_page: four passes (pinned to CPU 0
## and unpinned, LOCAL_CACHE on and off); prints each ratio against its target and rewrites the
## cache section of docs/benchmarks.md.
bench-cache: $(STAMP)
	$(BIN)/python benchmarks/cache_bench.py --markdown docs/benchmarks.md

## A seeded schedule of network faults (latency, resets mid-reply, blackhole, half-close,
## a cluster node cut off) under load through fault proxies, judged by tests/chaos_checker.py.
## SEED= (default: random, printed) DURATION=120 (s) CLUSTER=1 (3-master cluster).
## Appends the measurements to docs/data/chaos.json and regenerates docs/reliability.md's table.
chaos: $(STAMP)
	$(BIN)/python loadtests/chaos.py --record --duration $(or $(DURATION),120) \
		$(if $(SEED),--seed $(SEED)) $(if $(filter 1,$(CLUSTER)),--cluster)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info mutants

## The docs site from docs/ (mkdocs, strict: a broken link fails), into build/site.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

## The whole suite on the oldest and newest supported stacks (MATRIX="oldest newest").
matrix: $(STAMP)
	MATRIX="$(MATRIX)" bash .ci/matrix
