# One command each for setup, format, lint, typecheck, test and the demo; CI runs the
# same targets (.ci/run calls `make test`).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
EXTRAS ?= server,export,sim,load,dev
PYTEST_ARGS ?=

.PHONY: help install demo test check fmt lint typecheck hadolint pytest fuzz bench clean web-install webcheck

help:
	@echo "make demo       set up .venv and run the end-to-end demo (embedded default)"
	@echo "make test       set up .venv, then lint, typecheck and the whole test suite"
	@echo "make check      lint + format check + mypy + hadolint only"
	@echo "make fmt        format the code"
	@echo "make web-install  chromium + the web SDK's npm packages (.ci/install-browser)"
	@echo "make fuzz       fuzz the decoders for FUZZ_SECONDS (default 300; make test runs 20)"

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/asyncfl demo

test: check pytest

check: lint typecheck hadolint webcheck

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

hadolint: install
	@if [ -f Dockerfile ]; then $(BIN)/hadolint Dockerfile; fi

pytest: install web-install
	$(BIN)/pytest $(PYTEST_ARGS)

# The web SDK (client_sdk/web): Debian's chromium and the npm packages of its lockfile.
web-install:
	bash .ci/install-browser

webcheck: web-install
	cd client_sdk/web && node node_modules/typescript/bin/tsc -p tsconfig.json --noEmit
FUZZ_SECONDS ?= 300
fuzz: install
	PYTHONPATH=. $(PY) tests/fuzz/parsers.py -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=out/fuzz/ out/fuzz/corpus

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .asyncfl *.egg-info
	rm -rf client_sdk/web/node_modules client_sdk/web/dist
