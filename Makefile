# The two commands: `make run` (chat app; builds the index on first run) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= artifacts
# Datasets are looked for here first (this repo's sibling shared/data), then in ~/.cache/cartwise.
DATA_DIR ?= $(firstword $(CARTWISE_DATA_DIR) $(wildcard ../shared/data))

.PHONY: run test test-fast build lint bench setup setup-dev clean

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# torch is pinned and installed first: any other spec pulls a multi-GB CUDA build.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: setup
	$(PY) app.py --out $(OUT) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

build: setup
	$(PY) -m index_builder build --dataset online-retail --out $(OUT) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

test: setup-dev
	CARTWISE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q

# The quick loop: everything that needs no Spark, browser, server, local LLM or seconds of model loading
# (markers in pyproject.toml, set by tests/conftest.py and the test modules). CI runs the whole suite.
test-fast: setup-dev
	CARTWISE_DATA_DIR=$(DATA_DIR) $(PY) -m pytest -q -m "not spark and not browser and not servers and not llm and not slow"

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: setup-dev
	$(PY) -m bench.embed_throughput $(if $(DATA_DIR),--data-dir $(DATA_DIR))
	$(PY) -m bench.chat_latency --bundle $(OUT)
	$(PY) -m bench.cf_vs_implicit --bundle $(OUT)
	$(PY) -m bench.llm_grounding --bundle $(OUT)

clean:
	rm -rf $(OUT) .pytest_cache
