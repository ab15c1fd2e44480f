# Two commands for a newcomer: `make demo` (set up and run) and `make test` (set up and test).
# Each builds its own virtual environment from a clean checkout.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup setup-test demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch and torchvision are pinned in pyproject.toml; pip takes them from the local disk.
setup: $(BIN)/python
	$(BIN)/pip install -q -e .

setup-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

demo: setup
	$(BIN)/archlab models
	$(BIN)/archlab info vgg16 --layers
	$(BIN)/archlab calc stack --kernel 3 --layers 3 --channels 64

test: setup-test
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
