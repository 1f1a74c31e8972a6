# The README's two commands: `make demo` and `make test`. Both set up .venv from the lock first.
# The newest of Python 3.13, 3.12 and 3.11 that runs here (each is tried: a pyenv shim of a version
# that is not active exists but fails); `make demo PYTHON=python3.12` chooses one.
ifndef PYTHON
PYTHON := $(shell for p in python3.13 python3.12 python3.11; do $$p -c "" >/dev/null 2>&1 && { echo $$p; break; }; done)
endif
VENV := .venv
BIN := $(VENV)/bin
LIFETAG_HOME ?= .lifetag
DEMO := $(LIFETAG_HOME)/demo
export LIFETAG_HOME

.PHONY: demo test venv clean

venv: $(VENV)/.installed

# Re-installs only when the lock or the project metadata change, so a second `make demo` is fast.
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "lifetag needs Python 3.11, 3.12 or 3.13: none of python3.13, python3.12, python3.11 runs here; install one or pass PYTHON=/path/to/python"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The main job on embedded defaults: a generated shop -> features -> training (MLflow under
# LIFETAG_HOME) -> nightly tags for every customer -> the insight report (one HTML file, also logged to the
# model version's MLflow run). Training runs again only when the shop changes.
demo: venv $(DEMO)/trained
	$(BIN)/lifetag score --orders $(DEMO)/shop/orders.parquet --customers $(DEMO)/shop/customers.parquet --as-of 2025-01-01 --out $(DEMO)/tags.parquet
	$(BIN)/lifetag report --tags $(DEMO)/tags.parquet --orders $(DEMO)/shop/orders.parquet --customers $(DEMO)/shop/customers.parquet --out $(DEMO)/report.html
	@echo "Insight report: $(abspath $(DEMO)/report.html)"

# The customers table (static attributes, sign-ups who never bought) comes with the shop.
$(DEMO)/shop/customers.parquet: | venv
	$(BIN)/lifetag generate --n-customers 20000 --out $(DEMO)/shop --seed 7

$(DEMO)/trained: $(DEMO)/shop/customers.parquet
	$(BIN)/lifetag features --orders $(DEMO)/shop/orders.parquet --customers $(DEMO)/shop/customers.parquet --as-of 2025-01-01 --out $(DEMO)/features.parquet --summary
	$(BIN)/lifetag train --orders $(DEMO)/shop/orders.parquet --customers $(DEMO)/shop/customers.parquet --as-of 2025-01-01 --trials 2
	touch $@

# Debian packages tests need, installed here when missing: Chromium (the report test renders the HTML report),
# Java (the Spark tests), jemalloc (the service's workers run on it).
test: venv
	@bash .ci/install-chromium
	@bash .ci/install-java
	@bash .ci/install-jemalloc
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(LIFETAG_HOME)
