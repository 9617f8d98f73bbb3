# `make run`: the site with demo data on embedded defaults (SQLite, a serverless broker).
# `make test`: the whole test suite. Both set up .venv from requirements.txt first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ADDRPORT ?= 127.0.0.1:8000

.PHONY: install run test bench clean

$(BIN)/.installed: requirements.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $@

install: $(BIN)/.installed

run: export DEBUG ?= 1
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py rundev $(ADDRPORT)

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/import_prompts.py

clean:
	rm -rf $(VENV) var
