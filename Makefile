# Everything runs from a local virtualenv that the first target creates.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
## uv installs the same packages as pip, from the same index, in a fraction of the time
## (.[test,docs] here: pip 2 min 31 s, uv 33 s, a little more with the .pyc): pip brings
## it into the venv first, so Python, pip and make are all a fresh clone needs.
## --compile-bytecode as pip does: without the .pyc files every process the suite starts
## compiles its imports again (twice the CPU to import fastapi, aiohttp and uvicorn where
## PYTHONDONTWRITEBYTECODE is set).
UV_PIP := $(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python

## Bytecode is written, whatever the shell says: pytest keeps the modules it rewrites for its
## assertions (the tests', and those of every installed pytest plugin: hypothesis and
## schemathesis are ~240 modules) only as .pyc files. With PYTHONDONTWRITEBYTECODE set, every
## pytest process of the suite (4 workers, 2 more for the loaded tests, every inner session)
## rewrote them all again: collection took 8 CPU-s a worker instead of 4, an inner session
## 0.56 s instead of 0.35, and the suite 690 CPU-s instead of 580 (2026-12-06, main run 388 s
## -> 340 s). The .pyc files go to __pycache__ folders, which git ignores.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install patterns test docs test-loaded lint load soak bench perf gate-validate serve wheel clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(UV_PIP) -e ".[test,docs]"
	touch $(STAMP)

## The main job: sync, async and async_sem side by side on the embedded stack.
patterns: install
	$(BIN)/fanout patterns

## The tests (what CI runs): the suite, then the exact-count e2e tests on a loaded runner
## (those run only there: beside two CPU burners is the stricter place for them).
## Four workers on two cores: most tests wait on processes, stub delays and Locust's run
## time, not the CPU (10.4 min with -n 3 against 15 with -n 2, 2026-12-03); every count is
## exact under load anyway. The tests marked slow go first (tests/conftest.py); faker's
## plugin, which no test uses, is not loaded (a CPU-second at each worker's start).
## --maxschedchunk=1: xdist hands each worker one test at a time (it keeps two queued), not
## chunks of ~100 in a row: with chunks, the slow tests (first in the order) all landed on one
## or two workers and the others sat idle for the last 3 minutes (2026-12-06: workers ended at
## 256, 259, 358 and 434 s).
## Each run has a temporary root of its own (tests/under_load.py, here with no burners),
## removed when it passes: in pytest's shared root the loaded run's end deleted the main
## run's 17,000 files beside the burners, in 40-57 s of its 100 (2026-12-06).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m tests.under_load --burners 0 -- \
		$(BIN)/python -m pytest -n 4 --maxschedchunk=1 -p no:faker --durations=15 \
		$(addprefix --ignore=,$(LOADED_TESTS))
	$(MAKE) test-loaded

## The e2e tests whose counts must be exact whatever the machine, beside two CPU-bound
## processes (tests/under_load.py): no test may depend on the runner being idle. Two xdist
## workers beside the two burners load the cores more still, in half the time (65 s against
## 144 s on one worker, 2026-12-06). test_busy_machine runs here too: in the main run the
## other tests' apps drowned its quiet blocks (a quiet 14% against a busy 18%).
LOADED_TESTS = tests/e2e/test_structure.py tests/e2e/test_app_e2e.py \
	tests/e2e/test_any_client.py tests/e2e/test_diagnose_routes.py tests/examples \
	tests/e2e/test_busy_machine.py
test-loaded: install
	$(BIN)/python -m tests.under_load --burners 2 -- \
		$(BIN)/python -m pytest -n 2 --maxschedchunk=1 -p no:faker -q $(LOADED_TESTS)

## The docs site (mkdocs.yml) into site/: strict, so a page missing from the nav, a broken
## link or an API name griffe cannot resolve fails the build.
docs: install
	$(UV_PIP) -e ".[docs]"
	$(BIN)/mkdocs build --strict

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Sustained load on every pattern (embedded stack, 15 s, see locust.conf).
load: install
	$(BIN)/locust -f locustfiles/

## 60 s of Locust on /async: zero failures, no memory drift (see docs/soak.md).
soak: install
	$(BIN)/python benchmarks/soak.py

## Fan-out at the physical limit: app vs raw aiohttp, httpx and httpx2; table and plot in docs/.
bench: install
	$(UV_PIP) -e ".[bench]"
	$(BIN)/python -m benchmarks.physical_limit

## The performance suite, saved for the regression gate (compare with BASELINE=path.json).
perf: install
	$(BIN)/python -m pytest benchmarks/perf --fanout-save=reports/perf.json \
		--fanout-report-md=reports/perf.md $(if $(BASELINE),--fanout-compare=$(BASELINE))

## Ten A/A comparisons and ten with an injected slowdown (see docs/gating.md).
gate-validate: install
	$(BIN)/python benchmarks/gate_validation.py

serve: install
	$(BIN)/fanout serve

## The wheel `pip install pytest-fanout` installs (harness, Locust module, reference app).
wheel: install
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache *.egg-info build dist
