# The README's two commands: `make demo` and `make test`. Both set up .venv from the lock first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LIFETAG_HOME ?= .lifetag
DEMO := $(LIFETAG_HOME)/demo
export LIFETAG_HOME

.PHONY: demo test venv clean

venv: $(VENV)/.installed

# Re-installs only when the lock or the project metadata change, so a second `make demo` is fast.
$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: venv
	test -f $(DEMO)/shop/orders.parquet || $(BIN)/lifetag generate --customers 20000 --out $(DEMO)/shop --seed 7
	$(BIN)/lifetag features --orders $(DEMO)/shop/orders.parquet --as-of 2025-01-01 --out $(DEMO)/features.parquet --summary

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(LIFETAG_HOME)
